"""Tokenisation of preference records into prompt and response token ids (done once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records import PreferenceRecord, format_location
from lightning_dpo.data.validation import RecordProblem, apply_policy


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
        index: Position of the pair in its split's tokenised dataset (set by the data
            module; collated into ``pair_index``), or ``None``.
    """

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    source: str = "<generated>"
    line: int | None = None
    index: int | None = None

    @property
    def has_rewards(self) -> bool:
        """Whether both rewards are set."""
        return self.chosen_reward is not None and self.rejected_reward is not None


#: Untruncated token ids of one record's texts: ``(prompt, chosen, rejected)``.
Encoding = tuple[list[int], list[int], list[int]]
_ENCODE_CHUNK = 4096


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Encodes texts without special tokens, in batches (fast tokenizers run them in parallel).

    Args:
        tokenizer: The tokenizer.
        texts: Texts to encode.

    Returns:
        Token ids per text.
    """
    ids: list[list[int]] = []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        chunk = list(texts[start : start + _ENCODE_CHUNK])
        ids += tokenizer(chunk, add_special_tokens=False)["input_ids"]
    return ids


def encode_records(
    records: Sequence[PreferenceRecord], tokenizer: PreTrainedTokenizerBase
) -> list[Encoding]:
    """Encodes the prompt and both responses of every record, each separately.

    Encoding the texts separately (not their concatenation) is what makes the
    prompt/response boundary exact even where the tokenizer would merge across it.

    Args:
        records: The records.
        tokenizer: The tokenizer.

    Returns:
        One untruncated :data:`Encoding` per record.
    """
    n = len(records)
    texts = [r.prompt for r in records] + [r.chosen for r in records]
    ids = encode_texts(tokenizer, texts + [r.rejected for r in records])
    return list(zip(ids[:n], ids[n : 2 * n], ids[2 * n :], strict=True))


def resolve_max_prompt_length(max_length: int, max_prompt_length: int | None) -> int:
    """``max_prompt_length`` (default ``max_length // 2``), validated against ``max_length``.

    Raises:
        ValueError: If ``max_length < 2`` or ``max_prompt_length`` is not in ``[1, max_length]``.
    """
    max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not 1 <= max_prompt_length <= max_length:
        raise ValueError(
            f"max_prompt_length must be in [1, max_length={max_length}], got {max_prompt_length}"
        )
    return max_prompt_length


def _prompt_ids(
    body: list[int], bos: list[int], max_length: int, max_prompt_length: int
) -> list[int]:
    """BOS + the END of the prompt, at most ``max_prompt_length`` tokens; problems if unusable."""
    if len(bos) + len(body) >= max_length:
        raise RecordProblem(
            "prompt_too_long",
            f"field 'prompt': expected fewer than max_length={max_length} tokens, "
            f"got {len(bos) + len(body)} (no room for a response)",
        )
    keep = max(max_prompt_length - len(bos), 0)
    ids = bos + body[max(len(body) - keep, 0) :] if keep else bos
    if not ids:
        raise RecordProblem(
            "empty_prompt",
            "field 'prompt': expected at least one token (the tokenizer has no BOS token), "
            "got an empty prompt",
        )
    return ids


def build_pair(
    record: PreferenceRecord,
    encoding: Encoding,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
) -> TokenizedPair:
    """Truncates one record's encoding into a pair: prompt END kept, response START kept.

    The prompt is ``[bos] + prompt ids`` (BOS when the tokenizer has one), cut to its last
    ``max_prompt_length`` tokens with BOS kept; each response is ``ids + [eos]`` cut so that
    prompt + response fits in ``max_length`` (the EOS may be cut off).

    Raises:
        RecordProblem: ``prompt_too_long`` if BOS + the whole prompt has ``max_length``
            tokens or more; ``empty_prompt`` if the prompt has no token at all.
    """
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    prompt = _prompt_ids(encoding[0], bos, max_length, max_prompt_length)
    room = max_length - len(prompt)
    eos = [tokenizer.eos_token_id]
    return TokenizedPair(
        prompt_ids=tuple(prompt),
        chosen_ids=tuple((encoding[1] + eos)[:room]),
        rejected_ids=tuple((encoding[2] + eos)[:room]),
        chosen_reward=record.chosen_reward,
        rejected_reward=record.rejected_reward,
        source=record.source,
        line=record.line,
    )


def build_pairs(
    records: Sequence[PreferenceRecord],
    encodings: Sequence[Encoding],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None,
) -> tuple[list[TokenizedPair], list[tuple[str, RecordProblem]]]:
    """Builds the pairs of every record; problems are returned with their locations.

    Returns:
        ``(pairs, problems)``: the pairs of the valid records in order, and
        ``(location, problem)`` for the others.
    """
    max_prompt_length = resolve_max_prompt_length(max_length, max_prompt_length)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token")
    pairs, problems = [], []
    for i, (record, encoding) in enumerate(zip(records, encodings, strict=True)):
        try:
            pairs.append(build_pair(record, encoding, tokenizer, max_length, max_prompt_length))
        except RecordProblem as problem:
            problems.append(
                (
                    format_location(
                        record.source, record.line, i if record.index is None else record.index
                    ),
                    problem,
                )
            )
    return pairs, problems


def tokenize_records(
    records: Sequence[PreferenceRecord],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> list[TokenizedPair]:
    """Tokenises every record (see :func:`build_pair`), refusing any that does not fit.

    Args:
        records: Preference pairs.
        tokenizer: Tokenizer with an EOS token.
        max_length: Maximum length of prompt + response.
        max_prompt_length: Maximum prompt length; defaults to ``max_length // 2``.

    Returns:
        The tokenised pairs, in order.

    Raises:
        DataValidationError: Listing every record whose prompt leaves no room for a
            response or has no token, as ``file:line: field 'prompt': expected ...``.
        ValueError: If the limits are invalid or the tokenizer has no EOS token.
    """
    encodings = encode_records(records, tokenizer)
    pairs, problems = build_pairs(records, encodings, tokenizer, max_length, max_prompt_length)
    apply_policy(problems, "error", report=None)
    return pairs


def tokenize_record(
    record: PreferenceRecord,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> TokenizedPair:
    """Tokenises one record: :func:`tokenize_records` of a single record."""
    return tokenize_records([record], tokenizer, max_length, max_prompt_length)[0]
