"""Filling or loading the reference cache at fit start, and loading it again on resume.

For offline data the reference log-probs of a pair never change, so computing them at
every step of every epoch, and again in every run of a sweep over losses and betas, is
waste. At fit start the policy *is* the reference: one pass over each split (no swap, no
host snapshot) gives every pair's reference log-probs, saved under their
:func:`~lightning_dpo.reference.cache_store.cache_key`. A later run with the same key
loads them instead. Everything a pass needs comes in as arguments; nothing here reads
the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from lightning_dpo.errors import CheckpointError
from lightning_dpo.reference.cache_store import ReferenceLogpsCache, cache_key
from lightning_dpo.reference.sources import CachedSource

log = logging.getLogger(__name__)
SPLITS = ("train", "val")


@runtime_checkable
class PairIndexedData(Protocol):
    """The data a cache needs: a fingerprint per split and its batches in pair order."""

    def fingerprint(self, split: str) -> str:
        """Identifies the tokenised split."""

    def ordered_dataloader(self, split: str) -> Iterable[Any]:
        """The split's host batches in ``pair_index`` order."""


def build_cached_source(
    store: ReferenceLogpsCache,
    reference: str,
    data: PairIndexedData,
    settings: Mapping[str, object],
    compute_table: Callable[[Iterable[Any]], Tensor],
    write: bool,
) -> CachedSource:
    """Load each split's table from ``store``, or compute it and (``write``) save it.

    Args:
        store: The cache directory.
        reference: Fingerprint of the reference weights.
        data: The splits.
        settings: What else changes the log-probs (log-prob options, precision).
        compute_table: Ordered host batches -> ``[N, 2]`` table (the reference forward).
        write: Whether this process writes computed tables (global rank zero).
    """
    tables, keys = {}, {}
    for split in SPLITS:
        keys[split] = key = cache_key(reference, data.fingerprint(split), dict(settings))
        table = store.load(key)
        how = "loaded from cache"
        if table is None:
            table, how = compute_table(data.ordered_dataloader(split)), "computed, cached at"
            if write:
                store.save(key, table)
        tables[split] = table
        log.info(
            "Reference log-probs of %d %s pairs %s %s", len(table), split, how, store.path(key)
        )
    return CachedSource(tables, keys)


def load_cached_source(store: ReferenceLogpsCache, keys: Mapping[str, str]) -> CachedSource:
    """The tables a checkpoint's keys name (resume): never recomputed.

    Raises:
        CheckpointError: A table is missing; the resumed weights are not the reference.
    """
    tables = {}
    for split, key in keys.items():
        table = store.load(key)
        if table is None:
            raise CheckpointError(
                f"the checkpoint's reference cache {store.path(key)} is missing: the "
                "initial reference cannot be recomputed from the resumed weights"
            )
        tables[split] = table
    return CachedSource(tables, dict(keys))
