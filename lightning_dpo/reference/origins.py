"""Where a run's reference comes from: the policy at fit start, a log-prob cache, a checkpoint.

The reference callback asks once per fit (:meth:`ReferenceSwapCallback.on_fit_start
<lightning_dpo.reference.callback.ReferenceSwapCallback.on_fit_start>`) and gets an
:class:`Origin`: the log-prob source to use, and what its checkpoints record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_dpo.errors import CheckpointError
from lightning_dpo.integrity import is_sharded
from lightning_dpo.reference.cache.build import (
    PairIndexedData,
    Share,
    build_cached_source,
    gather_from_ranks,
    load_cached_source,
)
from lightning_dpo.reference.cache.store import ReferenceLogpsCache, model_fingerprint
from lightning_dpo.reference.contract import ReferenceScoredModule
from lightning_dpo.reference.sources import LogpsSource, ReferenceScorer, SwapSource
from lightning_dpo.reference.weights.base import WeightReference
from lightning_dpo.reference.weights.by_address import KIND, address_state, snapshot_from_address
from lightning_dpo.reference.weights.placement import SnapshotPlacement
from lightning_dpo.reference.weights.selection import (
    fresh_weights,
    missing_state,
    resolve_mode,
    weights_from_state,
)
from lightning_dpo.reference.weights.snapshot import HostSnapshotReference


@dataclass(frozen=True)
class Origin:
    """A run's reference and what its checkpoints record of it.

    Attributes:
        source: Where the reference log-probs come from.
        address: The by-address checkpoint state naming the snapshot's pretrained source
            (:mod:`~lightning_dpo.reference.weights.by_address`), or ``None``: checkpoints hold
            ``source.state_dict()``.
        last_sync_step: The optimizer step of the last TR-DPO update (restored on resume).
    """

    source: LogpsSource
    address: dict[str, Any] | None = None
    last_sync_step: int = 0


@dataclass(frozen=True)
class ByAddress:
    """Whether and where checkpoints may name a fresh snapshot by its pretrained source.

    Attributes:
        pretrained: The pretrained model the policy was loaded from, or ``None``.
        embed: Keep the snapshot in every checkpoint anyway.
        snapshot_dtype: The callback's ``snapshot_dtype`` setting (recorded).
    """

    pretrained: str | None
    embed: bool
    snapshot_dtype: str | None

    def allowed(self, weights: WeightReference, policy: nn.Module, world_size: int) -> bool:
        """One process, a host snapshot of unsharded weights, a source named, not ``embed``."""
        if self.pretrained is None or self.embed:
            return False
        sharded = any(is_sharded(param) for param in policy.parameters())
        return world_size == 1 and not sharded and isinstance(weights, HostSnapshotReference)


def fresh_origin(
    policy: nn.Module,
    mode: str,
    placement: SnapshotPlacement,
    moving: bool,
    address: ByAddress,
    world_size: int,
) -> Origin:
    """The reference of a fresh run: ``policy`` as it is now (``moving``: TR-DPO)."""
    weights = fresh_weights(policy, resolve_mode(mode, policy, moving_reference=moving), placement)
    if moving or not address.allowed(weights, policy, world_size):
        return Origin(SwapSource(weights))
    assert isinstance(weights, HostSnapshotReference)
    state = address_state(str(address.pretrained), weights, address.snapshot_dtype)
    said = "name it by address:" if state else "embed it; it differs from"
    rank_zero_info(f"Reference snapshot: checkpoints {said} {address.pretrained}")
    return Origin(SwapSource(weights), state)


def cached_origin(
    trainer: Any, module: ReferenceScoredModule, data: Any, cache_dir: str, scorer: ReferenceScorer
) -> Origin:
    """Reference log-probs precomputed over ``data`` (or loaded) in ``cache_dir``.

    Raises:
        TypeError: ``data`` has no ``fingerprint(split)`` and ``ordered_dataloader(split)``.
    """
    if not isinstance(data, PairIndexedData):
        raise TypeError(
            "logps_cache_dir needs data with fingerprint(split) and ordered_dataloader("
            "split), such as lightning_dpo.PreferenceDataModule: pass it to fit, or as "
            "ReferenceSwapCallback(datamodule=...)"
        )
    settings = {**module.logps_settings(), "precision": str(trainer.precision)}
    store, reference = ReferenceLogpsCache(cache_dir), model_fingerprint(module.policy)
    share = Share(trainer.global_rank, trainer.world_size, gather_from_ranks)
    source = build_cached_source(store, reference, data, settings, scorer.pair_chunks, share)
    trainer.strategy.barrier("reference_cache")
    return Origin(source)


def restored_origin(
    state: dict[str, Any] | None,
    where: str,
    policy: nn.Module,
    placement: SnapshotPlacement,
    mode: str,
    cache_dir: str | None,
    address: ByAddress,
) -> Origin:
    """The reference a checkpoint recorded: a cache's keys, an address or the snapshot.

    Args:
        state: The callback state in the checkpoint (``None`` or empty: none was saved).
        where: The checkpoint, for messages.
        policy: The live (resumed) policy.
        placement: The run's snapshot placement, decided as at a fresh start.
        mode: The callback's ``mode`` (for the message when no state was saved).
        cache_dir: The callback's ``logps_cache_dir``.
        address: The pretrained source now (wins over the recorded one) and whether later
            checkpoints keep naming it.

    Raises:
        CheckpointError: No state, a cache the settings do not name, or a bad snapshot.
    """
    if not state:
        raise missing_state(where, mode)
    if state["reference"] == "cache":
        if cache_dir is None:
            raise CheckpointError(
                f"{where} used a reference cache: set callbacks.reference.logps_cache_dir to resume"
            )
        cache = ReferenceLogpsCache(cache_dir)
        return Origin(load_cached_source(cache, state["cache_keys"]))
    last_sync_step = state.get("last_sync_step", 0)
    if state["reference"] != KIND:
        weights = weights_from_state(state, policy, placement, where)
        return Origin(SwapSource(weights), last_sync_step=last_sync_step)
    path = address.pretrained if address.pretrained is not None else state["source"]
    weights = snapshot_from_address(state, path, policy, placement, where)
    rank_zero_info(f"Reference policy (snapshot) rebuilt from {path}, fingerprint checked.")
    named = None
    if not address.embed:  # later checkpoints name it too, unless told not to
        named = {k: v for k, v in state.items() if k != "last_sync_step"} | {"source": path}
    return Origin(SwapSource(weights), named, last_sync_step)
