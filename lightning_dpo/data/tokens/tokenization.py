"""Tokenisation of preference records into prompt and response token ids (done once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.record import PreferenceRecord, format_location
from lightning_dpo.data.records.validation import RecordProblem, apply_policy
from lightning_dpo.pairs import TokenizedPair

#: Token ids of one record's texts as tokenised, before any cut: ``(prompt, chosen, rejected)``.
Encoding = tuple[list[int], list[int], list[int]]
_ENCODE_CHUNK = 4096
_PROBE = "a"


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Encodes texts without special tokens, in batches (fast tokenizers run them in parallel).

    Special tokens written in the text (``"<|im_end|>"``) are parsed as the tokenizer parses
    them (unless it sets ``split_special_tokens``); none is added.

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


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer itself puts before a text (its BOS, or nothing).

    Found by encoding a probe with and without special tokens: Llama's tokenizer gives
    ``[bos]``, SmolLM2's and GPT-2's give ``[]`` (their ``bos_token`` is never added).
    """
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def _with_prefix(prefix: list[int], ids: list[int]) -> list[int]:
    """``prefix + ids``, unless ``ids`` already starts with it (a BOS written in the text)."""
    return ids if ids[: len(prefix)] == prefix else prefix + ids


def _with_eos(ids: list[int], eos: int) -> list[int]:
    """``ids + [eos]``, unless they already end with it (an EOS written in the text)."""
    return ids if ids[-1:] == [eos] else [*ids, eos]


def encode_records(
    records: Sequence[PreferenceRecord], tokenizer: PreTrainedTokenizerBase
) -> list[Encoding]:
    """Tokenises the prompt and both responses of every record, each separately.

    Token ids are what the tokenizer (or the chat template) makes, as TRL's: a text
    prompt gets the tokenizer's own :func:`special_prefix` (BOS exactly once: never added
    to a prompt that starts with it), a text response the EOS token (once: not added after
    one that ends with it). A record rendered by a chat template
    (:attr:`~lightning_dpo.data.records.record.PreferenceRecord.templated`) is tokenised as
    rendered, nothing added: the template wrote its BOS and end-of-turn tokens.

    Encoding the texts separately (not their concatenation) is what makes the
    prompt/response boundary exact even where the tokenizer would merge across it.

    Args:
        records: The records.
        tokenizer: The tokenizer (with an EOS token).

    Returns:
        One uncut :data:`Encoding` per record.
    """
    n, prefix, eos = len(records), special_prefix(tokenizer), tokenizer.eos_token_id
    texts = [r.prompt for r in records] + [r.chosen for r in records]
    ids = encode_texts(tokenizer, texts + [r.rejected for r in records])
    encodings = []
    for i, record in enumerate(records):
        prompt, chosen, rejected = ids[i], ids[n + i], ids[2 * n + i]
        if not record.templated:
            prompt = _with_prefix(prefix, prompt)
            chosen, rejected = _with_eos(chosen, eos), _with_eos(rejected, eos)
        encodings.append((prompt, chosen, rejected))
    return encodings


def resolve_max_prompt_length(max_length: int, max_prompt_length: int | None) -> int | None:
    """``max_prompt_length``, validated against ``max_length`` (``None`` stays ``None``).

    Raises:
        ValueError: If ``max_length < 2`` or ``max_prompt_length`` is not in
            ``[1, max_length - 1]`` (the responses keep at least one token).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if max_prompt_length is not None and not 1 <= max_prompt_length < max_length:
        raise ValueError(
            f"max_prompt_length must be in [1, max_length - 1 = {max_length - 1}] so that "
            f"the responses keep at least one token, got {max_prompt_length}"
        )
    return max_prompt_length


def prompt_budget(max_length: int, max_prompt_length: int | None, longest_response: int) -> int:
    """How many prompt tokens a pair keeps at most.

    An explicit ``max_prompt_length`` is a fixed cap, as TRL's. By default (``None``) a
    prompt is cut only when it leaves the longer response too little room, and then only
    as far as that response needs, but never below ``max_length // 2``: a pair with long
    responses keeps the latest half of ``max_length`` of its prompt, and the responses
    the other half.

    Args:
        max_length: Tokens of prompt + response.
        max_prompt_length: The fixed cap, or ``None``.
        longest_response: Tokens of the pair's longer response, EOS included.
    """
    if max_prompt_length is not None:
        return max_prompt_length
    return max(max_length // 2, max_length - longest_response)


def _cut_prompt(ids: list[int], prefix: list[int], max_prompt_length: int) -> list[int]:
    """The END of the prompt (the latest turns), its special prefix kept, at most the budget."""
    if len(ids) <= max_prompt_length:
        return ids
    head = prefix if prefix and ids[: len(prefix)] == prefix else []
    keep = max(max_prompt_length - len(head), 0)
    return head + ids[len(ids) - keep :] if keep else head


EMPTY_PROMPT = (
    "field 'prompt': expected at least one token (the tokenizer adds none before a text, "
    "such as a BOS), got an empty prompt"
)


def _identical(encoding: Encoding, room: int, prompt: int, max_length: int) -> RecordProblem:
    """The problem of a pair whose responses are the same tokens (once cut to ``room``)."""
    where = (
        "once tokenised"
        if encoding[1] == encoding[2]
        else f"within the {room} tokens the prompt ({prompt}) leaves of max_length={max_length}"
    )
    return RecordProblem(
        "identical_tokens",
        f"fields 'chosen', 'rejected': expected responses that differ {where}, got the same tokens",
    )


def build_pair(
    record: PreferenceRecord,
    encoding: Encoding,
    prefix: list[int],
    max_length: int,
    max_prompt_length: int | None,
) -> TokenizedPair:
    """Cuts one record's encoding into a pair: prompt END kept, response START kept.

    As TRL's ``keep_end`` prompts and ``keep_start`` completions: the prompt (as
    :func:`encode_records` made it) is cut from its start to its last
    :func:`prompt_budget` tokens, keeping the tokenizer's special prefix (BOS) it starts
    with, by default only when the longer response would not fit otherwise; each
    response is cut to the room the prompt leaves (its EOS may be cut off).

    Args:
        record: The record.
        encoding: Its uncut ids.
        prefix: The tokenizer's :func:`special_prefix`.
        max_length: Tokens of prompt + response.
        max_prompt_length: The fixed prompt cap, or ``None``.

    Raises:
        RecordProblem: ``empty_prompt`` if the prompt has no token at all;
            ``identical_tokens`` if the cut responses are the same tokens (the pair would
            have nothing to prefer within ``max_length``).
    """
    longest = max(len(encoding[1]), len(encoding[2]))
    budget = prompt_budget(max_length, max_prompt_length, longest)
    prompt = _cut_prompt(encoding[0], prefix, budget)
    if not prompt:
        raise RecordProblem("empty_prompt", EMPTY_PROMPT)
    room = max_length - len(prompt)
    chosen, rejected = encoding[1][:room], encoding[2][:room]
    if chosen == rejected:
        raise _identical(encoding, room, len(prompt), max_length)
    return TokenizedPair(
        prompt_ids=tuple(prompt),
        chosen_ids=tuple(chosen),
        rejected_ids=tuple(rejected),
        chosen_reward=record.chosen_reward,
        rejected_reward=record.rejected_reward,
        source=record.source,
        line=record.line,
    )


@dataclass(frozen=True)
class BuiltPairs:
    """What :func:`build_pairs` made of a split's records.

    Attributes:
        pairs: The pairs of the records that fit, in record order.
        kept: For each pair, the position of its record in the input.
        problems: ``(location, problem)`` of the records that were refused.
    """

    pairs: list[TokenizedPair]
    kept: list[int]
    problems: list[tuple[str, RecordProblem]]


def build_pairs(
    records: Sequence[PreferenceRecord],
    encodings: Sequence[Encoding],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None,
) -> BuiltPairs:
    """Builds the pairs of every record (see :func:`build_pair`); problems are collected.

    Returns:
        The pairs, the records they came from, and the located problems of the others.
    """
    max_prompt_length = resolve_max_prompt_length(max_length, max_prompt_length)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token")
    built, prefix = BuiltPairs([], [], []), special_prefix(tokenizer)
    for i, (record, encoding) in enumerate(zip(records, encodings, strict=True)):
        try:
            pair = build_pair(record, encoding, prefix, max_length, max_prompt_length)
        except RecordProblem as problem:
            where = format_location(
                record.source, record.line, i if record.index is None else record.index
            )
            built.problems.append((where, problem))
        else:
            built.pairs.append(pair)
            built.kept.append(i)
    return built


def tokenize_records(
    records: Sequence[PreferenceRecord],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> list[TokenizedPair]:
    """Tokenises every record (see :func:`build_pair`), refusing any that cannot be made to fit.

    Args:
        records: Preference pairs.
        tokenizer: Tokenizer with an EOS token.
        max_length: Maximum length of prompt + response.
        max_prompt_length: Fixed cap on the prompt, or ``None`` (see :func:`prompt_budget`).

    Returns:
        The tokenised pairs, in order.

    Raises:
        DataValidationError: Listing every record whose prompt has no token, or whose
            responses are the same tokens once cut, as ``file:line: field ...: expected ...``.
        ValueError: If the limits are invalid or the tokenizer has no EOS token.
    """
    encodings = encode_records(records, tokenizer)
    built = build_pairs(records, encodings, tokenizer, max_length, max_prompt_length)
    apply_policy(built.problems, "error", report=None)
    return built.pairs


def tokenize_record(
    record: PreferenceRecord,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> TokenizedPair:
    """Tokenises one record: :func:`tokenize_records` of a single record."""
    return tokenize_records([record], tokenizer, max_length, max_prompt_length)[0]
