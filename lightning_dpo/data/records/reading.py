"""From a data source to validated preference records (format, rewards, error or skip)."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.chat import render, require_chat_template
from lightning_dpo.data.records.conversations import (
    conversational_pair,
    dialogue_pair,
    openai_pair,
    sharegpt_pair,
)
from lightning_dpo.data.records.formats import (
    FormatOptions,
    detect_format,
    explicit_texts,
    implicit_texts,
    unmatched_format,
)
from lightning_dpo.data.records.record import DataValidationError, PreferenceRecord, format_location
from lightning_dpo.data.records.rows import RawRow, read_rows
from lightning_dpo.data.records.validation import (
    RecordProblem,
    SkipReport,
    apply_policy,
    check_on_invalid,
    show,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardDefaults:
    """Rewards given to records that have none (as NeMo-Aligner's ``default_*_reward``).

    Attributes:
        chosen: Reward of a chosen response without one, or ``None`` to leave it unset.
        rejected: Reward of a rejected response without one, or ``None``.
    """

    chosen: float | None = None
    rejected: float | None = None


def _reward(row: dict[str, Any], column: str, default: float | None) -> float | None:
    """The finite number in ``column``, ``default`` when absent, or a problem."""
    value = row.get(column)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordProblem(
            "bad_reward", f"field '{column}': expected a finite number, got {show(value)}"
        )
    return float(value)


def _rewards(
    row: dict[str, Any], options: FormatOptions, defaults: RewardDefaults
) -> tuple[float | None, float | None]:
    """Both rewards, or neither; a problem when only one is set."""
    columns = options.column("chosen_reward"), options.column("rejected_reward")
    values = _reward(row, columns[0], defaults.chosen), _reward(row, columns[1], defaults.rejected)
    if (values[0] is None) != (values[1] is None):
        set_, unset = columns if values[0] is not None else columns[::-1]
        raise RecordProblem(
            "bad_reward", f"field '{unset}': expected a number because '{set_}' is set, got nothing"
        )
    return values


CONVERSATION_READERS = {
    "conversational": conversational_pair,
    "sharegpt": sharegpt_pair,
    "openai": openai_pair,
}


@dataclass(frozen=True)
class Reading:
    """How a source's records are read: their format, and whether the template renders them.

    Attributes:
        format: One of :data:`~lightning_dpo.data.records.formats.FORMATS` but ``auto``.
        detected: Whether the format was detected from the first record (not configured).
        templated: Whether the texts are rendered by the tokenizer's chat template.
    """

    format: str
    detected: bool
    templated: bool

    def describe(self) -> str:
        """E.g. ``format sharegpt (detected), rendered with the tokenizer's chat template``."""
        how = "rendered with the tokenizer's chat template" if self.templated else "plain text"
        return f"format {self.format} ({'detected' if self.detected else 'set'}), {how}"

    def note(self) -> str:
        """What record errors add: the format, and how it was chosen."""
        chosen = "detected from the first record" if self.detected else "set by data.records.format"
        return f"(format {self.format}, {chosen})"


def _record(
    row: RawRow, reading: Reading, options: FormatOptions, tokenizer, defaults
) -> PreferenceRecord:
    """One validated record, or a :class:`RecordProblem`."""
    if row.error is not None:
        raise RecordProblem("invalid_json", row.error)
    value = row.value
    if not isinstance(value, dict):
        raise RecordProblem("not_an_object", f"expected a JSON object, got {show(value)}")
    fmt, empty_turn = reading.format, False
    if fmt in CONVERSATION_READERS:
        conversation = CONVERSATION_READERS[fmt](value, options)
    else:
        reader = explicit_texts if fmt == "explicit" else implicit_texts
        texts = reader(value, options)
        conversation = dialogue_pair(*texts) if reading.templated else None
    if conversation is not None:
        texts = render(
            tokenizer, conversation, (options.column("chosen"), options.column("rejected"))
        )
        empty_turn = conversation.empty_turn
    rewards = _rewards(value, options, defaults)
    return PreferenceRecord(
        *texts, *rewards, row.source, row.line, row.index, reading.templated, empty_turn
    )


def _where(row: RawRow | PreferenceRecord) -> str:
    """``file:line`` or ``source[index]``."""
    return format_location(row.source, row.line, row.index)


def _reward_consistency(records: list[PreferenceRecord]) -> list[tuple[str, RecordProblem]]:
    """Problems for records whose reward presence differs from the first record's."""
    if not records:
        return []
    first = records[0]
    have = "has" if first.has_rewards else "has no"
    return [
        (
            _where(r),
            RecordProblem(
                "inconsistent_rewards",
                "fields 'chosen_reward', 'rejected_reward': expected rewards on every record "
                f"or on none ({_where(first)} {have} rewards), got "
                f"{'rewards' if r.has_rewards else 'none'}",
            ),
        )
        for r in records[1:]
        if r.has_rewards != first.has_rewards
    ]


def _reading_of(rows: list[RawRow], options: FormatOptions, tokenizer) -> Reading:
    """How a source is read: its format detected from its first decoded row unless set.

    Raises:
        DataValidationError: The first record matches no format (one error for the source,
            listing the formats and the fields each reads).
    """
    first_row = next((r for r in rows if isinstance(r.value, dict)), None)
    first = first_row.value if first_row is not None else {}
    if first_row is not None and (problem := unmatched_format(first, options)):
        raise DataValidationError(f"{_where(first_row)}: {problem}")
    fmt = detect_format(first, options)
    reading = Reading(fmt, options.format == "auto", options.templated(fmt))
    if reading.templated:
        require_chat_template(tokenizer, fmt)
    return reading


def _warn_ignored_tools(location: str | os.PathLike[str], rows: list[RawRow]) -> None:
    """One warning for an OpenAI source whose records declare ``input.tools`` (not trained)."""
    with_tools = sum(
        isinstance(r.value, dict) and "tools" in (r.value.get("input") or {}) for r in rows
    )
    if with_tools:
        log.warning(
            "%s: 'input.tools' of %d record(s) ignored: the tool definitions are not rendered "
            "into the prompt (the messages are)",
            os.fspath(location),
            with_tools,
        )


def _records(
    rows: list[RawRow],
    reading: Reading,
    options: FormatOptions,
    tokenizer: PreTrainedTokenizerBase | None,
    rewards: RewardDefaults,
) -> tuple[list[PreferenceRecord], list[tuple[str, RecordProblem]]]:
    """Each row as a record, or where it is and what is wrong with it."""
    records, problems = [], []
    for row in rows:
        try:
            records.append(_record(row, reading, options, tokenizer, rewards))
        except RecordProblem as problem:
            problems.append((_where(row), problem.noted(reading.note())))
    return records, problems


def load_records(
    location: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    options: FormatOptions | None = None,
    rewards: RewardDefaults | None = None,
    on_invalid: str = "error",
    split: str = "train",
) -> tuple[list[PreferenceRecord], SkipReport]:
    """Reads and validates every record of a source (see :func:`read_rows` for sources).

    Args:
        location: File, folder, saved dataset or cached Hub dataset name.
        tokenizer: Needed only for data rendered by its chat template (conversation
            formats, or ``options.chat_template``).
        options: Format and column mapping; auto-detected formats by default.
        rewards: Defaults for missing rewards.
        on_invalid: ``"error"`` to refuse the data at the first pass listing every problem,
            ``"skip"`` to drop invalid records and count them per reason in the report.
        split: Split of a saved ``DatasetDict`` or Hub dataset.

    Returns:
        ``(records, report)``, records in source order.

    Raises:
        DataValidationError: In error mode for any invalid record (``file:line: field
            'name': expected ..., got ...``), and in both modes when no record is valid.
        ValueError: For data to render with a tokenizer without a chat template.
    """
    check_on_invalid(on_invalid)
    options, rewards = options or FormatOptions(), rewards or RewardDefaults()
    rows = read_rows(location, split)
    reading = _reading_of(rows, options, tokenizer)
    report = SkipReport(os.fspath(location), total=len(rows), reading=reading.describe())
    records, problems = _records(rows, reading, options, tokenizer, rewards)
    apply_policy(problems, on_invalid, report)
    if reading.format == "openai":
        _warn_ignored_tools(location, rows)
    inconsistent = _reward_consistency(records)
    apply_policy(inconsistent, on_invalid, report)
    bad = {where for where, _ in inconsistent}
    records = [r for r in records if _where(r) not in bad]
    if not records:
        raise DataValidationError(f"{location}: expected at least one valid record, got none")
    return records, report
