"""Everything about pi_ref, the frozen reference policy every loss compares against.

- :mod:`~lightning_dpo.reference.callback`: :class:`ReferenceSwapCallback`, which gives
  every batch its reference log-probs.
- Weight references (one role, :class:`~lightning_dpo.reference.weights.WeightReference`):
  :mod:`~lightning_dpo.reference.host_snapshot` (the host snapshot swapped in) and
  :mod:`~lightning_dpo.reference.adapters` (peft adapters disabled);
  :mod:`~lightning_dpo.reference.weights` (the role, no grad and eval mode around it);
  :mod:`~lightning_dpo.reference.selection` (which one a run gets, or a checkpoint holds).
- Log-prob sources (another role): :mod:`~lightning_dpo.reference.sources` (a swapped
  forward, or a cache lookup).
- The cache: :mod:`~lightning_dpo.reference.cache_store` (its key and tables) and
  :mod:`~lightning_dpo.reference.cache_build` (filling and loading it).
- :mod:`~lightning_dpo.reference.contract` (what the module must offer),
  :mod:`~lightning_dpo.reference.settings`, :mod:`~lightning_dpo.reference.strategies`
  (the Lightning strategies supported).
"""

from lightning_dpo.reference.adapters import AdapterDisabledReference
from lightning_dpo.reference.callback import ReferenceSwapCallback
from lightning_dpo.reference.host_snapshot import (
    SWAP_MODES,
    HostSnapshotReference,
    SwapMode,
    snapshot_fingerprint,
)
from lightning_dpo.reference.sources import CachedSource, LogpsSource, SwapSource
from lightning_dpo.reference.weights import (
    WeightReference,
    eval_mode,
    local_tensor,
    reference_context,
    trainable_parameters,
)

__all__ = [
    "SWAP_MODES",
    "AdapterDisabledReference",
    "CachedSource",
    "HostSnapshotReference",
    "LogpsSource",
    "ReferenceSwapCallback",
    "SwapMode",
    "SwapSource",
    "WeightReference",
    "eval_mode",
    "local_tensor",
    "reference_context",
    "snapshot_fingerprint",
    "trainable_parameters",
]
