"""The reference by address: a checkpoint names the pretrained source instead of its weights.

When the reference is the unchanged weights of the pretrained model the run started from
(full-parameter training, ``model.pretrained`` set, no TR-DPO, one process), a copy of them
in every checkpoint is a copy of a file that is already on disk: a quarter of a
full-parameter checkpoint (weights, AdamW's two moments, the snapshot). The checkpoint
then records the source's path and the snapshot's fingerprint instead, and a resumed run
rebuilds the snapshot from the source, refusing in one line if its fingerprint differs
(the file changed or moved). That the source *is* the reference is checked once, at fit
start, by loading it: ``build_policy`` may change weights after loading (a resized
embedding), and such a run keeps the embedded snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dpo.errors import CheckpointError
from lightning_dpo.policy import load_pretrained
from lightning_dpo.reference.weights.base import trainable_parameters
from lightning_dpo.reference.weights.placement import SNAPSHOT_DTYPES, SnapshotPlacement
from lightning_dpo.reference.weights.snapshot import HostSnapshotReference, snapshot_fingerprint

KIND = "pretrained_address"
"""The kind a by-address checkpoint state records."""


def source_parameters(path: str, names: Iterable[str]) -> dict[str, Tensor] | None:
    """The weights named ``names`` of the pretrained model at ``path`` (``None``: one lacks).

    Loaded as ``build_policy`` loads it (:func:`~lightning_dpo.policy.load_pretrained`).
    """
    parameters = dict(load_pretrained(path).named_parameters())
    names = list(names)
    if not set(names) <= set(parameters):
        return None
    return {name: parameters[name].detach() for name in names}


def _fingerprint(parameters: Mapping[str, Tensor], dtype: torch.dtype | None) -> str:
    """The fingerprint the snapshot of ``parameters`` kept in ``dtype`` has."""
    return snapshot_fingerprint(
        {name: tensor if dtype is None else tensor.to(dtype) for name, tensor in parameters.items()}
    )


def address_state(
    path: str, snapshot: HostSnapshotReference, snapshot_dtype: str | None
) -> dict[str, Any] | None:
    """The checkpoint state naming ``snapshot`` by address, or ``None`` if ``path`` is not it.

    Args:
        path: The pretrained model the run started from (``model.pretrained``).
        snapshot: The fresh run's host snapshot.
        snapshot_dtype: The callback's ``snapshot_dtype`` setting.
    """
    parameters = source_parameters(path, snapshot.snapshot)
    dtype = SNAPSHOT_DTYPES[snapshot_dtype]
    if parameters is None or _fingerprint(parameters, dtype) != snapshot.fingerprint:
        return None
    return {
        "reference": KIND,
        "source": os.fspath(path),
        "fingerprint": snapshot.fingerprint,
        "snapshot_dtype": snapshot_dtype,
    }


def snapshot_from_address(
    state: Mapping[str, Any],
    path: str,
    policy: nn.Module,
    placement: SnapshotPlacement,
    where: str,
) -> HostSnapshotReference:
    """The snapshot a by-address checkpoint names, rebuilt from ``path`` and checked.

    Kept in the recorded ``snapshot_dtype`` (the fingerprint is of that), one copy for the
    process (by address needs one process), otherwise as ``placement`` says.

    Raises:
        CheckpointError: ``path`` is gone, or its weights' fingerprint is not the recorded one.
    """
    advice = (
        "point callbacks.reference.pretrained (model.pretrained) at the pretrained model the "
        "run started from"
    )
    if not Path(path).exists():
        raise CheckpointError(
            f"{where} names its reference by address, {path}, which is gone: {advice}"
        )
    names = trainable_parameters(policy)
    parameters = source_parameters(path, names)
    dtype = SNAPSHOT_DTYPES[state["snapshot_dtype"]]
    if parameters is None or _fingerprint(parameters, dtype) != state["fingerprint"]:
        raise CheckpointError(
            f"{where} names its reference by address, {path}, whose weights are no longer the "
            f"run's reference (the file changed, or another model is there): {advice}"
        )
    restored = HostSnapshotReference(parameters, replace(placement.unshared(), dtype=dtype))
    restored.check_compatible(policy)
    return restored
