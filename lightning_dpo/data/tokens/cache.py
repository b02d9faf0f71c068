"""On-disk cache of record encodings, keyed by texts + tokenizer, stored with ``datasets``.

Each entry carries an xxh3 fingerprint of each of its files (:data:`MANIFEST`), written
with it and checked before it is used: an entry that does not verify (flipped bytes, a
truncated or missing file, no manifest) is reported by path, never used, and replaced by
a fresh encoding.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.record import PreferenceRecord
from lightning_dpo.data.tokens.fingerprints import texts_fingerprint, tokenizer_fingerprint
from lightning_dpo.data.tokens.tokenization import Encoding, encode_records
from lightning_dpo.integrity import directory_problem, write_manifest

log = logging.getLogger(__name__)
_COLUMNS = ("prompt", "chosen", "rejected")
MANIFEST = "lightning_dpo_cache.json"
"""The entry's fingerprint of each of its files."""


def _load(path: Path, expected: int) -> list[Encoding] | None:
    """The cached encodings at ``path``, or ``None`` when absent or unusable.

    An entry that does not verify is reported, removed, and not used.
    """
    from datasets import load_from_disk

    if not path.is_dir():
        return None
    problem = directory_problem(path, MANIFEST)
    if problem is not None:
        log.warning(
            "token cache %s does not verify (%s): encoding anew, replacing it", path, problem
        )
        shutil.rmtree(path, ignore_errors=True)
        return None
    try:
        table = load_from_disk(os.fspath(path)).to_dict()
    except Exception as exc:  # a damaged entry is rebuilt, never trusted
        log.warning("ignoring unreadable token cache %s (%s)", path, exc)
        return None
    if len(table["prompt"]) != expected:
        return None
    return list(zip(*(table[c] for c in _COLUMNS), strict=True))


def _store(path: Path, encodings: Sequence[Encoding]) -> None:
    """Writes encodings atomically (to a temporary folder renamed into place)."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    features = Features({c: Seq(Value("int32")) for c in _COLUMNS})
    columns = {c: [e[i] for e in encodings] for i, c in enumerate(_COLUMNS)}
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    from datasets import utils as datasets_tqdm

    quiet = not datasets_tqdm.are_progress_bars_disabled()
    if quiet:  # no progress bar for a cache write; restored right after
        datasets_tqdm.disable_progress_bars()
    try:
        Dataset.from_dict(columns, features=features).save_to_disk(os.fspath(tmp))
    finally:
        if quiet:
            datasets_tqdm.enable_progress_bars()
    write_manifest(tmp, MANIFEST)
    try:
        os.replace(tmp, path)
    except OSError:  # another process stored the same entry first
        shutil.rmtree(tmp, ignore_errors=True)


def cached_encodings(
    records: Sequence[PreferenceRecord],
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[list[Encoding], bool]:
    """Encodes the records once: from ``cache_dir`` when an entry exists, else fresh.

    The entry is keyed by :func:`texts_fingerprint` (every text, in order, and the
    tokenizer's fingerprint), so any change to data or tokenizer makes a new entry; the
    length limits are applied later and can change without re-encoding.

    Args:
        records: The records.
        tokenizer: The tokenizer.
        cache_dir: Folder of cache entries, or ``None`` to encode without caching.

    Returns:
        ``(encodings, hit)``: one encoding per record and whether it came from the cache.
    """
    if cache_dir is None:
        return encode_records(records, tokenizer), False
    key = texts_fingerprint(records, tokenizer_fingerprint(tokenizer))
    path = Path(cache_dir).expanduser() / f"encodings-{key[:40]}"
    cached = _load(path, len(records))
    if cached is not None:
        return cached, True
    encodings = encode_records(records, tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    _store(path, encodings)
    return encodings, False
