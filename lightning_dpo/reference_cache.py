"""Reference log-probs computed once per dataset and kept on disk.

For offline data the reference log-probs of a pair never change, so computing them at
every step of every epoch, and again in every run of a sweep over losses and betas, is
waste. At fit start the policy *is* the reference: one pass over each split (no swap,
no host snapshot) gives every pair's reference log-probs, saved under a key made of
the reference weights' fingerprint, the split's data fingerprint and the log-prob
settings. A later run with the same key loads them instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_dpo.reference import snapshot_fingerprint

log = logging.getLogger(__name__)
SPLITS = ("train", "val")

CACHE_VERSION = 1


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of every parameter and buffer of ``model`` (names, shapes, dtypes, bytes)."""
    return snapshot_fingerprint(model.state_dict())


def cache_key(reference: str, data: str, settings: dict[str, object]) -> str:
    """The key of one split's cache: hash of reference, data and log-prob settings."""
    payload = {"version": CACHE_VERSION, "reference": reference, "data": data, **settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def compute_pair_logps(
    batches: Iterable[dict[str, Tensor]], forward: Callable[[dict[str, Tensor]], Tensor]
) -> Tensor:
    """Run ``forward`` over ordered batches; gather ``[N, 2]`` (chosen, rejected) by pair.

    Raises:
        KeyError: A batch has no ``pair_index``.
        RuntimeError: Some pair was never seen.
    """
    chunks: list[tuple[Tensor, Tensor]] = []
    for batch in batches:
        sums = forward(batch).detach().float().cpu()
        half = sums.shape[0] // 2
        chunks.append((batch["pair_index"].cpu(), torch.stack([sums[:half], sums[half:]], -1)))
    size = max(int(index.max()) for index, _ in chunks) + 1 if chunks else 0
    table = torch.full((size, 2), float("nan"))
    for index, values in chunks:
        table[index] = values
    if torch.isnan(table).any():
        raise RuntimeError("some pairs got no reference log-probs: is the loader complete?")
    return table


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


class CachedReference:
    """Reference strategy that looks log-probs up instead of running a forward.

    Args:
        tables: ``{"train": [N, 2], "val": [M, 2]}`` tables indexed by ``pair_index``.
        keys: The cache key of each table (stored in checkpoints, for resume).
        hits: How many tables were loaded from disk.
        misses: How many were computed.
    """

    nbytes = 0
    in_flight = False

    def __init__(
        self, tables: dict[str, Tensor], keys: dict[str, str], hits: int = 0, misses: int = 0
    ) -> None:
        self.tables = tables
        self.keys = keys
        self.hits = hits
        self.misses = misses

    def lookup(self, split: str, pair_index: Tensor) -> Tensor:
        """``[2B]`` reference log-probs (chosen rows first) of the pairs of a batch."""
        values = self.tables[split].to(pair_index.device)[pair_index]
        return torch.cat([values[:, 0], values[:, 1]])

    def restore(self) -> None:
        """Nothing is ever swapped."""


def build_cached_reference(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    cache_dir: str | os.PathLike,
    forward: Callable[[dict[str, Any]], Tensor],
) -> CachedReference:
    """Load, or compute and save, the reference log-probs of the train and val splits.

    Call at fit start, when the policy is still the reference. Every rank computes the
    tables (a sharded forward needs all ranks); global rank zero writes them.

    Args:
        trainer: The trainer (datamodule, precision, strategy, rank).
        pl_module: The module (``policy`` and ``logps_settings()`` for the key).
        cache_dir: Directory of the tables.
        forward: Host batch -> ``[2B]`` reference log-probs (the callback's forward).

    Raises:
        TypeError: The datamodule cannot fingerprint or order its splits.
    """
    datamodule = trainer.datamodule
    if not all(hasattr(datamodule, a) for a in ("fingerprint", "ordered_dataloader")):
        raise TypeError(
            "cache_dir needs a datamodule with fingerprint(split) and "
            "ordered_dataloader(split), such as lightning_dpo.PreferenceDataModule"
        )
    reference = model_fingerprint(pl_module.policy)
    settings = {**pl_module.logps_settings(), "precision": str(trainer.precision)}
    cache, tables, keys, hits = ReferenceLogpsCache(cache_dir), {}, {}, 0
    for split in SPLITS:
        keys[split] = key = cache_key(reference, datamodule.fingerprint(split), settings)
        tables[split] = cache.load(key)
        if tables[split] is not None:
            hits += 1
            log.info(
                "Reference log-probs of %d %s pairs loaded from cache %s",
                len(tables[split]),
                split,
                cache.path(key),
            )
            continue
        tables[split] = compute_pair_logps(datamodule.ordered_dataloader(split), forward)
        if trainer.is_global_zero:
            cache.save(key, tables[split])
        log.info(
            "Reference log-probs of %d %s pairs computed, cached at %s",
            len(tables[split]),
            split,
            cache.path(key),
        )
    trainer.strategy.barrier("reference_cache")
    return CachedReference(tables, keys, hits=hits, misses=len(SPLITS) - hits)


def load_cached_reference(cache_dir: str | os.PathLike, keys: dict[str, str]) -> CachedReference:
    """The tables a checkpoint's keys name (resume): never recomputed.

    Raises:
        RuntimeError: A table is missing; the resumed weights are not the reference.
    """
    cache, tables = ReferenceLogpsCache(cache_dir), {}
    for split, key in keys.items():
        tables[split] = cache.load(key)
        if tables[split] is None:
            raise RuntimeError(
                f"the checkpoint's reference cache {cache.path(key)} is missing: the "
                "initial reference cannot be recomputed from the resumed weights"
            )
    return CachedReference(tables, dict(keys), hits=len(keys))
