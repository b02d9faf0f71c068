"""Reading raw rows from local files, folders and Hugging Face datasets (never downloads)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from lightning_dpo.data.records.record import DataValidationError

#: File endings read by :func:`read_rows`, alone or in a folder.
SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")


@dataclass(frozen=True)
class RawRow:
    """One row as read, before validation.

    Attributes:
        value: The decoded row (normally a dict); ``None`` when ``error`` is set.
        source: File path, or ``path:split`` / ``name:split`` for datasets.
        line: 1-based line for line-based files, else ``None``.
        index: 0-based row index for row-based sources, else ``None``.
        error: Why the row could not be decoded (e.g. invalid JSON), or ``None``.
    """

    value: Any
    source: str
    line: int | None = None
    index: int | None = None
    error: str | None = None


def _suffix(path: Path) -> str | None:
    """The supported ending of ``path``, or ``None``."""
    name = path.name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)


def _open_binary(path: Path):
    """Opens a file for binary reading, decompressing ``.gz``."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _json_problem(exc: json.JSONDecodeError) -> str:
    """The decoder's message with its column, e.g. ``Expecting value at column 7``.

    Some messages already end in "at" (``Unterminated string starting at``): the column
    follows them directly.
    """
    joiner = " " if exc.msg.endswith(" at") else " at "
    return f"{exc.msg}{joiner}column {exc.colno}"


def _json_line(raw: bytes, source: str, line: int) -> RawRow:
    """Decodes one JSON line; a broken line becomes a row with ``error`` set."""
    try:
        # Without its line break, so that a cut-off line says "Unterminated string".
        return RawRow(json.loads(raw.rstrip(b"\r\n").decode("utf-8")), source, line=line)
    except UnicodeDecodeError as exc:
        return RawRow(None, source, line=line, error=f"expected UTF-8 text, got {exc.reason}")
    except json.JSONDecodeError as exc:
        return RawRow(
            None,
            source,
            line=line,
            error=f"expected a JSON object, got invalid JSON ({_json_problem(exc)})",
        )


def _read_jsonl(path: Path) -> list[RawRow]:
    """Rows of a JSON-lines file (optionally gzip-compressed); blank lines are ignored."""
    source = os.fspath(path)
    with _open_binary(path) as handle:
        return [
            _json_line(raw, source, line) for line, raw in enumerate(handle, start=1) if raw.strip()
        ]


def _columns_to_rows(table: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Turns ``{"column": [values...]}`` into a list of row dicts."""
    lengths = {len(v) for v in table.values() if isinstance(v, list)}
    if len(lengths) != 1 or not all(isinstance(v, list) for v in table.values()):
        raise DataValidationError(
            f"{source}: expected a JSON array of records or an object of equal-length "
            f"column lists, got an object with keys {sorted(table)[:10]}"
        )
    return [dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)]


def _read_json(path: Path) -> list[RawRow]:
    """Rows of a ``.json`` file: an array of records, an object of columns, or JSON lines."""
    source = os.fspath(path)
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        value = json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON values: JSON lines named .json
            return _read_jsonl(path)
        raise DataValidationError(
            f"{source}:{exc.lineno}: expected a JSON document, got invalid JSON "
            f"({_json_problem(exc)})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{source}: expected UTF-8 text, got {exc.reason}") from exc
    rows = _columns_to_rows(value, source) if isinstance(value, dict) else value
    if not isinstance(rows, list):
        raise DataValidationError(
            f"{source}: expected a JSON array of records, got {type(rows).__name__}"
        )
    return [RawRow(row, source, index=i) for i, row in enumerate(rows)]


def _read_parquet(path: Path) -> list[RawRow]:
    """Rows of a Parquet file."""
    import pyarrow.parquet as pq

    source = os.fspath(path)
    return [RawRow(row, source, index=i) for i, row in enumerate(pq.read_table(path).to_pylist())]


def _read_file(path: Path) -> list[RawRow]:
    """Rows of one supported file."""
    suffix = _suffix(path)
    if suffix is None:
        raise DataValidationError(
            f"{path}: expected a file ending in one of {SUPPORTED_SUFFIXES}, a folder of them, "
            "or a dataset saved with datasets' save_to_disk"
        )
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix.startswith(".jsonl"):
        return _read_jsonl(path)
    return _read_json(path)


def _data_files(folder: Path) -> Iterator[Path]:
    """Supported files under ``folder`` (recursively), in sorted path order."""
    return (p for p in sorted(folder.rglob("*")) if p.is_file() and _suffix(p) is not None)


def _dataset_rows(dataset: Any, source: str, split: str) -> list[RawRow]:
    """Rows of a ``datasets`` Dataset, or of ``split`` of a DatasetDict."""
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataValidationError(
                f"{source}: expected a split named {split!r}, got splits {sorted(dataset)}"
            )
        dataset = dataset[split]
    where = f"{source}:{split}"
    return [RawRow(row, where, index=i) for i, row in enumerate(dataset.to_list())]


def _read_hub_cache(name: str, split: str) -> list[RawRow]:
    """Rows of a Hugging Face Hub dataset that is already in the local cache."""
    import datasets.config
    import huggingface_hub.constants
    from datasets import load_dataset

    # Offline for this call only (restored on exit): a cache miss fails instead of downloading.
    offline = (
        mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
        mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True),
    )
    try:
        with offline[0], offline[1]:
            dataset = load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types; all mean "not usable offline"
        raise DataValidationError(
            f"{name}: expected a local file or folder, or a Hugging Face dataset already in "
            f"the local cache (nothing is downloaded), got neither ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from exc
    return _dataset_rows(dataset, name, split)


def read_rows(location: str | os.PathLike[str], split: str = "train") -> list[RawRow]:
    """Reads every row of a preference data source, undecodable rows included.

    Sources, in order of precedence:

    * a file ending in ``.jsonl``, ``.jsonl.gz``, ``.json`` (array of records, object of
      columns, or JSON lines), ``.json.gz`` or ``.parquet``;
    * a folder saved with ``datasets``' ``save_to_disk`` (``split`` picks the split of a
      ``DatasetDict``), read with ``load_from_disk``;
    * any other folder: every supported file under it, in sorted path order;
    * otherwise a Hugging Face Hub dataset name, only if it is in the local cache.

    Args:
        location: Path or dataset name.
        split: Split of a ``DatasetDict`` or Hub dataset.

    Returns:
        The rows; a broken JSON line is a row with ``error`` set, not an exception.

    Raises:
        DataValidationError: If the source does not exist, has an unsupported type, is
            not a readable document as a whole, or holds no rows.
    """
    path = Path(location)
    if path.is_dir():
        if any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
            from datasets import load_from_disk

            rows = _dataset_rows(load_from_disk(os.fspath(path)), os.fspath(path), split)
        else:
            rows = [row for file in _data_files(path) for row in _read_file(file)]
    elif path.is_file():
        rows = _read_file(path)
    elif _suffix(path) is not None or path.is_absolute() or str(location).startswith("."):
        raise DataValidationError(f"{location}: expected an existing file or folder, got none")
    else:
        rows = _read_hub_cache(str(location), split)
    if not rows:
        raise DataValidationError(f"{location}: expected at least one record, got none")
    return rows


def resolve_train_source(
    train_file: str | None, path: str | None, require_file: bool
) -> str | None:
    """``train_file`` or its alias ``path``; refuses both differing, or neither when required."""
    if path is not None and train_file is not None and os.fspath(path) != os.fspath(train_file):
        raise ValueError(f"path and train_file are aliases; got both: {path!r} and {train_file!r}")
    train_file = train_file if train_file is not None else path
    if train_file is None and require_file:
        raise ValueError(
            "no data given: set data.source.path=<file or folder> (alias data.source.train_file)"
        )
    return train_file
