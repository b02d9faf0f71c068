"""Reading and validating preference pairs stored as JSON lines."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from lightning_dpo.data.records import DataValidationError, PreferenceRecord

TEXT_FIELDS = ("prompt", "chosen", "rejected")
REWARD_FIELDS = ("chosen_reward", "rejected_reward")
_MAX_REPORTED_ERRORS = 20


def _show(value: Any) -> str:
    """Short repr of an offending value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(obj: dict[str, Any], field: str, allow_empty: bool) -> str | None:
    """Returns an error description for a text field, or ``None`` when it is valid."""
    expected = "a string" if allow_empty else "a non-empty string"
    if field not in obj:
        return f"field '{field}': expected {expected}, got nothing (field is missing)"
    value = obj[field]
    if not isinstance(value, str) or (not allow_empty and value == ""):
        return f"field '{field}': expected {expected}, got {_show(value)}"
    return None


def _check_reward(obj: dict[str, Any], field: str) -> str | None:
    """Returns an error description for a reward field, or ``None`` when valid or absent."""
    value = obj.get(field)
    if value is None:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        return f"field '{field}': expected a finite number, got {_show(value)}"
    return None


def _record_errors(obj: Any) -> list[str]:
    """Lists everything wrong with one decoded JSON value (empty when it is a valid record)."""
    if not isinstance(obj, dict):
        return [f"expected a JSON object with fields {TEXT_FIELDS}, got {_show(obj)}"]
    errors = [_check_text(obj, f, allow_empty=f == "prompt") for f in TEXT_FIELDS]
    errors += [_check_reward(obj, f) for f in REWARD_FIELDS]
    found = [e for e in errors if e is not None]
    if found:
        return found
    if obj["chosen"] == obj["rejected"]:
        return ["field 'rejected': expected a response different from 'chosen', got the same text"]
    present = [f for f in REWARD_FIELDS if obj.get(f) is not None]
    if len(present) == 1:
        missing = next(f for f in REWARD_FIELDS if f not in present)
        return [f"field '{missing}': expected a number because '{present[0]}' is set, got nothing"]
    return []


def _optional_float(value: Any) -> float | None:
    """``float(value)``, or ``None`` when ``value`` is ``None``."""
    return None if value is None else float(value)


def _parse_line(text: str, source: str, line: int) -> tuple[PreferenceRecord | None, list[str]]:
    """Parses one non-blank line into a record, or returns its error messages."""
    where = f"{source}:{line}"
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at column {exc.colno}"
        return None, [f"{where}: expected a JSON object, got invalid JSON ({problem})"]
    errors = _record_errors(obj)
    if errors:
        return None, [f"{where}: {e}" for e in errors]
    record = PreferenceRecord(
        prompt=obj["prompt"],
        chosen=obj["chosen"],
        rejected=obj["rejected"],
        chosen_reward=_optional_float(obj.get("chosen_reward")),
        rejected_reward=_optional_float(obj.get("rejected_reward")),
        source=source,
        line=line,
    )
    return record, []


def _reward_consistency_errors(records: list[PreferenceRecord]) -> list[str]:
    """Reports records whose reward presence differs from the first record's."""
    first = records[0]
    errors = []
    for record in records[1:]:
        if record.has_rewards != first.has_rewards:
            have = "has" if first.has_rewards else "has no"
            got = "rewards" if record.has_rewards else "none"
            errors.append(
                f"{record.source}:{record.line}: fields 'chosen_reward', 'rejected_reward': "
                f"expected rewards on every record or on none (line {first.line} {have} "
                f"rewards), got {got}"
            )
    return errors


def _raise_if_errors(errors: list[str]) -> None:
    """Raises a DataValidationError listing (at most a few dozen of) ``errors``."""
    if not errors:
        return
    shown = errors[:_MAX_REPORTED_ERRORS]
    if len(errors) > len(shown):
        shown.append(f"... and {len(errors) - len(shown)} more errors")
    raise DataValidationError("\n".join(shown))


def read_jsonl(path: str | os.PathLike[str]) -> list[PreferenceRecord]:
    """Reads and validates a JSON-lines file of preference pairs.

    Each non-blank line must be an object with string fields ``prompt``, ``chosen`` and
    ``rejected`` (responses non-empty and different) and optionally both numeric
    ``chosen_reward`` and ``rejected_reward``; rewards must be on every record or on none.
    Other fields are ignored. Every line is validated before anything is returned.

    Args:
        path: File to read (UTF-8).

    Returns:
        The records, in file order, with ``source``/``line`` set.

    Raises:
        DataValidationError: If the file has no records or any record is invalid; the message
            lists each problem as ``file:line: field 'name': expected ..., got ...``.
    """
    source = os.fspath(path)
    records: list[PreferenceRecord] = []
    errors: list[str] = []
    with open(source, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            record, line_errors = _parse_line(text, source, line)
            errors += line_errors
            if record is not None:
                records.append(record)
    _raise_if_errors(errors)
    if not records:
        raise DataValidationError(f"{source}: expected at least one record, got an empty file")
    _raise_if_errors(_reward_consistency_errors(records))
    return records
