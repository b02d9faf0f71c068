"""Filling or loading the reference cache at fit start, and loading it again on resume.

For offline data the reference log-probs of a pair never change, so computing them at
every step of every epoch, and again in every run of a sweep over losses and betas, is
waste. At fit start the policy *is* the reference: one pass over each split (no swap, no
host snapshot) gives every pair's reference log-probs, saved under their
:func:`~lightning_dpo.reference.cache.store.cache_key`. A later run with the same key
loads them instead, whatever its number of processes. Under data parallelism each rank
scores its share of the batches (the batches a single process would score, dealt between
the ranks), the shares are gathered, and one rank writes: the table is bitwise the
single-process one. Everything a pass needs comes in as arguments; nothing here reads
the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch.distributed as dist

from lightning_dpo.errors import CheckpointError
from lightning_dpo.reference.cache.source import CachedSource
from lightning_dpo.reference.cache.store import (
    PairChunk,
    ReferenceLogpsCache,
    UnverifiedCacheError,
    assemble_table,
    cache_key,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "val")


@runtime_checkable
class PairIndexedData(Protocol):
    """The data a cache needs: a fingerprint per split and its batches, every pair once."""

    def fingerprint(self, split: str) -> str:
        """Identifies the tokenised split."""

    def ordered_dataloader(self, split: str, num_replicas: int = 1, rank: int = 0) -> Iterable[Any]:
        """The split's host batches, every pair once over the ``num_replicas`` shares."""


def _single_process(chunks: list[PairChunk]) -> list[list[PairChunk]]:
    return [chunks]


def gather_from_ranks(chunks: list[PairChunk]) -> list[list[PairChunk]]:
    """Every rank's chunks, on every rank (``all_gather_object``; this one's alone if none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [chunks]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, chunks)
    return gathered


@dataclass(frozen=True)
class Share:
    """This process's share of the cache pass.

    Attributes:
        rank: Its global rank.
        world: The number of processes.
        gather: This process's chunks -> every process's (an all-gather).
    """

    rank: int = 0
    world: int = 1
    gather: Callable[[list[PairChunk]], list[list[PairChunk]]] = _single_process


def build_cached_source(
    store: ReferenceLogpsCache,
    reference: str,
    data: PairIndexedData,
    settings: Mapping[str, object],
    score: Callable[[Iterable[Any]], list[PairChunk]],
    share: Share | None = None,
) -> CachedSource:
    """Load each split's table from ``store``, or compute it and save it (rank zero).

    Args:
        store: The cache directory.
        reference: Fingerprint of the reference weights.
        data: The splits.
        settings: What else changes the log-probs (log-prob options, precision).
        score: Host batches -> their pairs' log-probs (the reference forward).
        share: This process's share of the pass; default: a single process.
    """
    share = share or Share()
    tables, keys = {}, {}
    for split in SPLITS:
        keys[split] = key = cache_key(reference, data.fingerprint(split), dict(settings))
        try:
            table = store.load(key)
        except UnverifiedCacheError as error:
            log.warning("Reference log-prob cache %s: recomputing and replacing it", error)
            table = None
        how = "loaded from cache"
        if table is None:
            batches = data.ordered_dataloader(split, num_replicas=share.world, rank=share.rank)
            shares = share.gather(score(batches))
            table = assemble_table(chunk for chunks in shares for chunk in chunks)
            how = "computed, cached at"
            if share.rank == 0:
                store.save(key, table)
        tables[split] = table
        log.info(
            "Reference log-probs of %d %s pairs %s %s", len(table), split, how, store.path(key)
        )
    return CachedSource(tables, keys)


def load_cached_source(store: ReferenceLogpsCache, keys: Mapping[str, str]) -> CachedSource:
    """The tables a checkpoint's keys name (resume): never recomputed.

    Raises:
        CheckpointError: A table is missing or does not verify; the resumed weights are not
            the reference.
    """
    tables = {}
    for split, key in keys.items():
        try:
            table = store.load(key)
        except UnverifiedCacheError as error:
            raise CheckpointError(
                f"the checkpoint's reference cache {error}: the initial reference cannot be "
                "recomputed from the resumed weights; restore the file, or start a new run"
            ) from error
        if table is None:
            raise CheckpointError(
                f"the checkpoint's reference cache {store.path(key)} is missing: the "
                "initial reference cannot be recomputed from the resumed weights"
            )
        tables[split] = table
    return CachedSource(tables, dict(keys))
