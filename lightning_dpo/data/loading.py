"""From a data source to validated preference records (format, rewards, error or skip)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.chat import conversational_texts, require_chat_template
from lightning_dpo.data.formats import FormatOptions, detect_format, explicit_texts, implicit_texts
from lightning_dpo.data.records import DataValidationError, PreferenceRecord, format_location
from lightning_dpo.data.sources import RawRow, read_rows
from lightning_dpo.data.validation import (
    RecordProblem,
    SkipReport,
    apply_policy,
    check_on_invalid,
    show,
)


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


def _texts(row: Any, fmt: str, options: FormatOptions, tokenizer: PreTrainedTokenizerBase):
    """``(prompt, chosen, rejected)`` of a decoded row in format ``fmt``."""
    if not isinstance(row, dict):
        names = [options.column(f) for f in ("prompt", "chosen", "rejected")]
        raise RecordProblem(
            "not_an_object", f"expected a JSON object with fields {names}, got {show(row)}"
        )
    if fmt == "explicit":
        return explicit_texts(row, options)
    if fmt == "implicit":
        return implicit_texts(row, options)
    return conversational_texts(row, options, tokenizer)


def _record(row: RawRow, fmt: str, options: FormatOptions, tokenizer, defaults) -> PreferenceRecord:
    """One validated record, or a :class:`RecordProblem`."""
    if row.error is not None:
        raise RecordProblem("invalid_json", row.error)
    prompt, chosen, rejected = _texts(row.value, fmt, options, tokenizer)
    rewards = _rewards(row.value, options, defaults)
    return PreferenceRecord(prompt, chosen, rejected, *rewards, row.source, row.line, row.index)


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


def _format_of(rows: list[RawRow], options: FormatOptions, tokenizer) -> str:
    """The format of a source, detected from its first decoded row unless configured."""
    first = next((r.value for r in rows if isinstance(r.value, dict)), {})
    fmt = detect_format(first, options)
    if fmt == "conversational":
        require_chat_template(tokenizer)
    return fmt


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
        tokenizer: Needed only for conversational data (its chat template).
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
        ValueError: For conversational data with a tokenizer without a chat template.
    """
    check_on_invalid(on_invalid)
    options, rewards = options or FormatOptions(), rewards or RewardDefaults()
    rows = read_rows(location, split)
    fmt = _format_of(rows, options, tokenizer)
    report = SkipReport(os.fspath(location), total=len(rows))
    records, problems = [], []
    for row in rows:
        try:
            records.append(_record(row, fmt, options, tokenizer, rewards))
        except RecordProblem as problem:
            problems.append((_where(row), problem))
    apply_policy(problems, on_invalid, report)
    inconsistent = _reward_consistency(records)
    apply_policy(inconsistent, on_invalid, report)
    bad = {where for where, _ in inconsistent}
    records = [r for r in records if _where(r) not in bad]
    if not records:
        raise DataValidationError(f"{location}: expected at least one valid record, got none")
    return records, report
