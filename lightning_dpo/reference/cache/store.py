"""The reference cache's pure parts: its key, its tables and the directory holding them.

A table is ``[N, 2]`` float32 (chosen, rejected) reference log-probs by ``pair_index``,
stored under a key made of the reference weights' fingerprint, the split's data
fingerprint and the log-prob settings (:func:`cache_key`), with an xxh3 fingerprint of
its values, checked on every load: a table that does not verify is never used
(:class:`UnverifiedCacheError`). How a run fills or loads them is
:mod:`lightning_dpo.reference.cache.build`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_dpo.errors import first_line
from lightning_dpo.integrity import tensor_fingerprint, tensors_fingerprint

CACHE_VERSION = 1
TABLE_KEY, FINGERPRINT_KEY = "table", "fingerprint"
"""What a cache file holds: the table and the fingerprint of its values."""


class UnverifiedCacheError(RuntimeError):
    """A cached table that does not verify: unreadable, without a fingerprint, or changed.

    Args:
        path: The table's file.
        problem: What failed.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} does not verify ({problem})")
        self.path = path
        self.problem = problem


def read_verified_table(path: Path) -> Tensor:
    """The table in ``path``, checked against the fingerprint saved with it.

    Raises:
        UnverifiedCacheError: The file cannot be read, holds no fingerprint (written by an
            older version) or its values do not match it.
    """
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as error:  # a damaged file is reported, never trusted
        raise UnverifiedCacheError(
            path, f"unreadable: {type(error).__name__}: {first_line(error)}"
        ) from error
    if not isinstance(stored, dict) or set(stored) != {TABLE_KEY, FINGERPRINT_KEY}:
        raise UnverifiedCacheError(path, "no fingerprint saved with the table")
    table = stored[TABLE_KEY]
    if tensor_fingerprint(TABLE_KEY, table) != stored[FINGERPRINT_KEY]:
        raise UnverifiedCacheError(path, "its values do not match the fingerprint saved with them")
    return table


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of every parameter and buffer of ``model`` (names, shapes, dtypes, bytes)."""
    return tensors_fingerprint(model.state_dict())


def cache_key(reference: str, data: str, settings: dict[str, object]) -> str:
    """The key of one split's cache: hash of reference, data and log-prob settings."""
    payload = {"version": CACHE_VERSION, "reference": reference, "data": data, **settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


PairChunk = tuple[Tensor, Tensor]
"""``(pair_index [B], values [B, 2])`` of one batch, on the host."""


def pair_logps_chunks(
    batches: Iterable[dict[str, Tensor]], forward: Callable[[dict[str, Tensor]], Tensor]
) -> list[PairChunk]:
    """Run ``forward`` over batches; each batch's pairs and their (chosen, rejected) log-probs.

    Raises:
        KeyError: A batch has no ``pair_index``.
    """
    chunks: list[PairChunk] = []
    for batch in batches:
        sums = forward(batch).detach().float().cpu()
        half = sums.shape[0] // 2
        chunks.append((batch["pair_index"].cpu(), torch.stack([sums[:half], sums[half:]], -1)))
    return chunks


def assemble_table(chunks: Iterable[PairChunk]) -> Tensor:
    """The ``[N, 2]`` table by ``pair_index`` of chunks (from one process or several).

    Raises:
        RuntimeError: Some pair was never seen.
    """
    chunks = list(chunks)
    size = max(int(index.max()) for index, _ in chunks) + 1 if chunks else 0
    table = torch.full((size, 2), float("nan"))
    for index, values in chunks:
        table[index] = values
    if torch.isnan(table).any():
        raise RuntimeError("some pairs got no reference log-probs: is the loader complete?")
    return table


def compute_pair_logps(
    batches: Iterable[dict[str, Tensor]], forward: Callable[[dict[str, Tensor]], Tensor]
) -> Tensor:
    """``[N, 2]`` (chosen, rejected) by pair of ordered batches, in one process."""
    return assemble_table(pair_logps_chunks(batches, forward))


class ReferenceLogpsCache:
    """A directory of ``<key>.pt`` files, each a ``[N, 2]`` float32 table by ``pair_index``.

    Args:
        directory: Where the tables live (created on first save).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> Tensor | None:
        """The verified table of ``key``, or ``None`` when it is not cached.

        Raises:
            UnverifiedCacheError: The file is there but does not verify.
        """
        path = self.path(key)
        return read_verified_table(path) if path.is_file() else None

    def save(self, key: str, table: Tensor) -> Path:
        """Write the table and its fingerprint atomically (temporary file, then rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        table = table.contiguous()
        stored = {TABLE_KEY: table, FINGERPRINT_KEY: tensor_fingerprint(TABLE_KEY, table)}
        torch.save(stored, temporary)
        temporary.replace(path)
        return path
