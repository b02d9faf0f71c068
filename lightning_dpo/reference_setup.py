"""How :class:`~lightning_dpo.callbacks.ReferenceSwapCallback` gets its reference.

A fresh run chooses it from the policy (:func:`resolve_mode`, :func:`build_reference`).
A resumed run must take it from the checkpoint, never from the resumed (trained)
weights, so the callback state records which reference was used and, for a host
snapshot, the reference weights themselves with their fingerprint (:func:`reference_state`,
:func:`strategy_from_state`).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_dpo.policy import has_trained_adapter, is_peft_model
from lightning_dpo.reference import (
    AdapterDisabledReference,
    HostSnapshotReference,
    ReferenceStrategy,
    SwapMode,
    snapshot_fingerprint,
)
from lightning_dpo.reference_cache import CachedReference, load_cached_reference


def resolve_mode(mode: str, policy: nn.Module, moving_reference: bool) -> str:
    """``"snapshot"`` or ``"disable_adapters"`` for the callback's ``mode`` and ``policy``.

    ``"auto"`` picks ``"disable_adapters"`` for a peft policy whose adapter is fresh
    (``lora_B`` all zero) and whose reference never moves (no TR-DPO), else ``"snapshot"``.
    """
    if mode != "auto":
        return mode
    if not moving_reference and is_peft_model(policy) and not has_trained_adapter(policy):
        return "disable_adapters"
    return "snapshot"


def build_reference(
    policy: nn.Module, mode: str, snapshot_dtype: torch.dtype | None, swap_mode: SwapMode
) -> ReferenceStrategy:
    """The reference of a fresh run: ``policy`` as it is now.

    Args:
        policy: The placed (and, if so, sharded) policy before any update.
        mode: ``"snapshot"`` or ``"disable_adapters"`` (see :func:`resolve_mode`).
        snapshot_dtype: dtype of the host snapshot, ``None`` for each parameter's own.
        swap_mode: How the snapshot is swapped in.

    Raises:
        TypeError: ``"disable_adapters"`` for a policy that is not a peft model.
    """
    if mode == "disable_adapters":
        if not is_peft_model(policy):
            raise TypeError("mode='disable_adapters' needs a peft policy (model=lora)")
        if has_trained_adapter(policy):
            rank_zero_info(
                "Reference policy: the bare base model, although the adapter is not at "
                "its initialisation (mode='disable_adapters' was chosen explicitly)."
            )
        else:
            rank_zero_info("Reference policy: the base model, with the adapters disabled.")
        return AdapterDisabledReference()
    strategy = HostSnapshotReference.capture(policy, snapshot_dtype, swap_mode)
    what = "the trained adapter" if is_peft_model(policy) else "the trainable weights"
    rank_zero_info(
        f"Reference policy: host snapshot of {what}, {len(strategy.snapshot)} tensors "
        f"({strategy.nbytes / 2**20:.2f} MiB per rank"
        f"{', pinned' if strategy.pin_memory else ''})."
    )
    return strategy


def reference_state(strategy: ReferenceStrategy | None, last_sync_step: int) -> dict[str, Any]:
    """The checkpoint state of ``strategy`` (empty before a reference exists).

    Args:
        strategy: The reference in use.
        last_sync_step: Optimizer step of the last TR-DPO reference update (snapshot only).

    Returns:
        ``{"reference": "cache", "cache_keys"}``, ``{"reference": "disable_adapters"}`` or
        ``{"reference": "snapshot", "reference_snapshot", "fingerprint", "last_sync_step"}``.
    """
    if strategy is None:
        return {}
    if isinstance(strategy, CachedReference):
        return {"reference": "cache", "cache_keys": dict(strategy.keys)}
    if isinstance(strategy, HostSnapshotReference):
        return {
            "reference": "snapshot",
            "reference_snapshot": strategy.state_dict(),
            "fingerprint": strategy.fingerprint,
            "last_sync_step": last_sync_step,
        }
    return {"reference": "disable_adapters"}


def strategy_from_state(
    state: dict[str, Any] | None,
    policy: nn.Module,
    *,
    ckpt_path: str | None,
    mode: str,
    swap_mode: SwapMode,
    cache_dir: str | None,
) -> ReferenceStrategy:
    """The reference recorded by :func:`reference_state`, checked against ``policy``.

    Args:
        state: The callback state read from the checkpoint.
        policy: The live (resumed) policy the reference is swapped into.
        ckpt_path: The checkpoint, for error messages.
        mode: The callback's ``mode``, for error messages.
        swap_mode: How the restored snapshot is swapped in.
        cache_dir: Where the cached reference log-probs are (cache references only).

    Raises:
        RuntimeError: The state is missing, its snapshot does not match its fingerprint
            or the model, or it used a cache and ``cache_dir`` is unset.
    """
    if not state:
        raise RuntimeError(
            f"Resuming from {ckpt_path!r}, but the checkpoint holds no "
            f"ReferenceSwapCallback(mode={mode!r}) state: the live weights are the "
            "trained policy, not the reference, so training cannot continue correctly. "
            "Resume from a checkpoint written with the same ReferenceSwapCallback mode."
        )
    if state["reference"] == "cache":
        if cache_dir is None:
            raise RuntimeError("the checkpoint used a reference cache: set cache_dir to resume")
        return load_cached_reference(cache_dir, state["cache_keys"])
    if state["reference"] == "disable_adapters":
        rank_zero_info("Reference policy (from checkpoint): base model, adapters disabled.")
        return AdapterDisabledReference()
    snapshot = state["reference_snapshot"]
    if snapshot_fingerprint(snapshot) != state["fingerprint"]:
        raise RuntimeError(
            f"the reference snapshot in {ckpt_path!r} does not match its "
            "fingerprint: the checkpoint is corrupt"
        )
    pin = any(param.is_cuda for param in policy.parameters())
    strategy = HostSnapshotReference(snapshot, pin_memory=pin, swap_mode=swap_mode)
    strategy.check_compatible(policy)
    rank_zero_info("Reference policy: host snapshot restored from the checkpoint.")
    return strategy
