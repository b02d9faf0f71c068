"""Everything about pi_ref, the frozen reference policy every loss compares against, by role.

- :mod:`~lightning_dpo.reference.callback`: :class:`ReferenceSwapCallback`, which gives
  every batch its reference log-probs; :mod:`~lightning_dpo.reference.origins`: where a
  run's reference comes from (the policy at fit start, the cache, a checkpoint).
- :mod:`~lightning_dpo.reference.weights`: weight references, the ways to make the live
  policy be pi_ref (a host snapshot swapped in, placed once per run; peft adapters off).
- :mod:`~lightning_dpo.reference.sources`: log-prob sources (a forward with the weights
  swapped in, one per optimizer step under accumulation; or a cache lookup).
- :mod:`~lightning_dpo.reference.cache`: the precomputed log-prob cache (key, tables).
- :mod:`~lightning_dpo.reference.node_share`: one host snapshot per node under DDP.
- :mod:`~lightning_dpo.reference.contract` (what the module must offer),
  :mod:`~lightning_dpo.reference.settings`, :mod:`~lightning_dpo.reference.strategies`
  (the Lightning strategies supported).
"""

from lightning_dpo.reference.cache.source import CachedSource
from lightning_dpo.reference.callback import ReferenceSwapCallback
from lightning_dpo.reference.sources import LogpsSource, SwapSource
from lightning_dpo.reference.weights.adapters import AdapterDisabledReference
from lightning_dpo.reference.weights.base import (
    WeightReference,
    eval_mode,
    local_tensor,
    reference_context,
    trainable_parameters,
)
from lightning_dpo.reference.weights.placement import SWAP_MODES, SnapshotPlacement, SwapMode
from lightning_dpo.reference.weights.snapshot import HostSnapshotReference, snapshot_fingerprint

__all__ = [
    "SWAP_MODES",
    "AdapterDisabledReference",
    "CachedSource",
    "HostSnapshotReference",
    "LogpsSource",
    "ReferenceSwapCallback",
    "SnapshotPlacement",
    "SwapMode",
    "SwapSource",
    "WeightReference",
    "eval_mode",
    "local_tensor",
    "reference_context",
    "snapshot_fingerprint",
    "trainable_parameters",
]
