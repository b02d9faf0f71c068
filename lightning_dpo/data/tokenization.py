"""Tokenisation of preference records into prompt and response token ids (done once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records import DataValidationError, PreferenceRecord, format_location


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one preference pair; the prompt/response boundary is exact.

    Attributes:
        prompt_ids: Prompt tokens (BOS first when the tokenizer has one).
        chosen_ids: Chosen response tokens followed by EOS (unless truncated away).
        rejected_ids: Rejected response tokens followed by EOS (unless truncated away).
        chosen_reward: Reward of the chosen response, if any.
        rejected_reward: Reward of the rejected response, if any.
        source: Where the record came from.
        line: 1-based line in ``source`` (``None`` for generated records).
    """

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    source: str = "<generated>"
    line: int | None = None

    @property
    def has_rewards(self) -> bool:
        """Whether both rewards are set."""
        return self.chosen_reward is not None and self.rejected_reward is not None


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Encodes ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    """Validates the length limits."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not 1 <= max_prompt_length <= max_length:
        raise ValueError(
            f"max_prompt_length must be in [1, max_length={max_length}], got {max_prompt_length}"
        )


def _prompt_ids(
    record: PreferenceRecord, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int, where: str
) -> list[int]:
    """BOS (if any) + the last prompt tokens, at most ``max_prompt_length`` in all."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    body = _encode(tokenizer, record.prompt)
    keep = max(max_prompt_length - len(bos), 0)
    ids = bos + (body[len(body) - keep :] if keep else [])
    if not ids:
        raise DataValidationError(
            f"{where}: field 'prompt': expected at least "
            "one token (the tokenizer has no BOS token), got an empty prompt"
        )
    return ids


def tokenize_record(
    record: PreferenceRecord,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
    *,
    index: int | None = None,
) -> TokenizedPair:
    """Tokenises a record: prompt and responses separately, then truncates.

    The prompt is ``[bos] + tokens(prompt)`` and each response is ``tokens(response) + [eos]``
    (all encoded with ``add_special_tokens=False``). The prompt keeps its END (at most
    ``max_prompt_length`` tokens, BOS always kept); each response keeps its START so that
    prompt + response fits in ``max_length`` (the EOS may be cut off).

    Args:
        record: The preference pair.
        tokenizer: Tokenizer with an EOS token.
        max_length: Maximum length of prompt + response.
        max_prompt_length: Maximum prompt length; defaults to ``max_length // 2``.
        index: Position of the record in its dataset, named in errors about generated records.

    Returns:
        The tokenised pair.

    Raises:
        DataValidationError: If the (truncated) prompt leaves no room for a response.
        ValueError: If the limits are invalid or the tokenizer has no EOS token.
    """
    max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
    _check_lengths(max_length, max_prompt_length)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token")
    where = format_location(record.source, record.line, index)
    prompt = _prompt_ids(record, tokenizer, max_prompt_length, where)
    room = max_length - len(prompt)
    if room < 1:
        raise DataValidationError(
            f"{where}: field 'prompt': expected fewer than "
            f"max_length={max_length} tokens, got {len(prompt)} (no room for a response)"
        )
    eos = [tokenizer.eos_token_id]
    return TokenizedPair(
        prompt_ids=tuple(prompt),
        chosen_ids=tuple((_encode(tokenizer, record.chosen) + eos)[:room]),
        rejected_ids=tuple((_encode(tokenizer, record.rejected) + eos)[:room]),
        chosen_reward=record.chosen_reward,
        rejected_reward=record.rejected_reward,
        source=record.source,
        line=record.line,
    )


def tokenize_records(
    records: Sequence[PreferenceRecord],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> list[TokenizedPair]:
    """Tokenises every record with :func:`tokenize_record`.

    Args:
        records: Preference pairs.
        tokenizer: Tokenizer with an EOS token.
        max_length: Maximum length of prompt + response.
        max_prompt_length: Maximum prompt length; defaults to ``max_length // 2``.

    Returns:
        The tokenised pairs, in order.
    """
    return [
        tokenize_record(r, tokenizer, max_length, max_prompt_length, index=i)
        for i, r in enumerate(records)
    ]
