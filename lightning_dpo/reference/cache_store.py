"""The reference cache's pure parts: its key, its tables and the directory holding them.

A table is ``[N, 2]`` float32 (chosen, rejected) reference log-probs by ``pair_index``,
stored under a key made of the reference weights' fingerprint, the split's data
fingerprint and the log-prob settings (:func:`cache_key`). How a run fills or loads
them is :mod:`lightning_dpo.reference.cache_build`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_dpo.integrity import tensors_fingerprint

CACHE_VERSION = 1


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
        """The table of ``key``, or ``None`` when it is not cached."""
        path = self.path(key)
        return torch.load(path, weights_only=True) if path.is_file() else None

    def save(self, key: str, table: Tensor) -> Path:
        """Write the table atomically (temporary file, then rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(table.contiguous(), temporary)
        temporary.replace(path)
        return path
