"""Which weight reference a run gets: chosen from the policy, or read back from a checkpoint.

A fresh run chooses it from the policy (:func:`resolve_mode`, :func:`fresh_weights`). A
resumed run must take it from the checkpoint, never from the resumed (trained) weights:
the callback state records the kind and, for a host snapshot, the reference weights
with their fingerprint (:func:`weights_from_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_dpo.errors import CheckpointError
from lightning_dpo.policy import has_trained_adapter, is_peft_model
from lightning_dpo.reference.weights.adapters import AdapterDisabledReference
from lightning_dpo.reference.weights.base import WeightReference
from lightning_dpo.reference.weights.placement import SnapshotPlacement
from lightning_dpo.reference.weights.snapshot import HostSnapshotReference

WEIGHT_KINDS: dict[str, type[HostSnapshotReference] | type[AdapterDisabledReference]] = {
    HostSnapshotReference.kind: HostSnapshotReference,
    AdapterDisabledReference.kind: AdapterDisabledReference,
}
"""Weight references by the kind their checkpoint state records."""


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


def fresh_weights(policy: nn.Module, mode: str, placement: SnapshotPlacement) -> WeightReference:
    """The reference of a fresh run: ``policy`` as it is now, said in the log.

    Args:
        policy: The placed (and, if so, sharded) policy before any update.
        mode: ``"snapshot"`` or ``"disable_adapters"`` (see :func:`resolve_mode`).
        placement: How a host snapshot is kept (dtype, swaps, node share, pinning).

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
    snapshot = HostSnapshotReference.capture(policy, placement)
    share = placement.share
    what = "the trained adapter" if is_peft_model(policy) else "the trainable weights"
    where = "per rank" if share is None else f"per node, shared by its {share.local_world} ranks"
    rank_zero_info(
        f"Reference policy: host snapshot of {what}, {len(snapshot.snapshot)} tensors "
        f"({snapshot.nbytes / 2**20:.2f} MiB {where}"
        f"{', pinned' if snapshot.pin_memory else ''})."
    )
    return snapshot


def missing_state(where: str, mode: str) -> CheckpointError:
    """The error for a checkpoint written without the reference callback's state."""
    return CheckpointError(
        f"Resuming from {where}, but the checkpoint holds no "
        f"ReferenceSwapCallback(mode={mode!r}) state: the live weights are the "
        "trained policy, not the reference, so training cannot continue correctly. "
        "Resume from a checkpoint written with the same ReferenceSwapCallback mode."
    )


def weights_from_state(
    state: Mapping[str, Any], policy: nn.Module, placement: SnapshotPlacement, where: str
) -> WeightReference:
    """The weight reference recorded in a checkpoint's callback state, checked.

    Args:
        state: The callback state (``{"reference": kind, ...}``).
        policy: The live (resumed) policy.
        placement: How a restored snapshot is kept: the run's, as at a fresh start.
        where: The checkpoint, for messages.

    Raises:
        CheckpointError: An unknown kind, or a snapshot that is corrupt or does not fit.
    """
    kind = state["reference"]
    if kind not in WEIGHT_KINDS:
        raise CheckpointError(f"{where}: unknown reference kind {kind!r} in the checkpoint")
    weights = WEIGHT_KINDS[kind].from_state(state, policy, placement, where)
    rank_zero_info(f"Reference policy ({kind}) restored from the checkpoint.")
    return weights
