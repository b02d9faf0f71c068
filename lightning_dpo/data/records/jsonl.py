"""Reading and validating preference pairs stored as JSON lines (explicit-prompt format)."""

from __future__ import annotations

import os

from lightning_dpo.data.records.formats import FormatOptions
from lightning_dpo.data.records.reading import load_records
from lightning_dpo.data.records.record import PreferenceRecord


def read_jsonl(path: str | os.PathLike[str]) -> list[PreferenceRecord]:
    """Reads and validates a JSON-lines file of ``prompt``/``chosen``/``rejected`` records.

    Each non-blank line must be an object with string fields ``prompt``, ``chosen`` and
    ``rejected`` (responses different, at most one of them empty) and optionally both numeric
    ``chosen_reward`` and ``rejected_reward``; rewards must be on every record or on none.
    Other fields are ignored. Every line is validated before anything is returned. For
    the other formats and sources use :func:`~lightning_dpo.data.records.reading.load_records`.

    Args:
        path: File to read (UTF-8, optionally ``.gz``).

    Returns:
        The records, in file order, with ``source``/``line`` set.

    Raises:
        DataValidationError: If the file has no records or any record is invalid; the message
            lists each problem as ``file:line: field 'name': expected ..., got ...``.
    """
    records, _ = load_records(path, options=FormatOptions(format="explicit"))
    return records
