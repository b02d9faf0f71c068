"""Where and how a host snapshot of the reference is kept: decided once per run.

:class:`SnapshotPlacement` gathers what every snapshot of a run shares: the dtype it is
kept in, how it is swapped into the live weights, whether the node's ranks share one copy,
and whether its host buffers are pinned. The reference callback decides it once, at fit
start or at resume, from the placed policy (:meth:`SnapshotPlacement.decide`), and hands
the same object to the snapshot it captures, restores from a checkpoint or rebuilds from
its pretrained source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from lightning_dpo.reference.node_share import NodeShare

SwapMode = Literal["auto", "copy", "exchange"]
SWAP_MODES = ("auto", "copy", "exchange")
SNAPSHOT_DTYPES = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The ``snapshot_dtype`` settings and the dtype each keeps the snapshot in."""


@dataclass(frozen=True)
class SnapshotPlacement:
    """How a run keeps its host snapshot.

    Attributes:
        dtype: Keep the snapshot in this dtype (``torch.bfloat16`` halves host memory and
            rounds the reference weights); ``None`` keeps each parameter's own dtype.
        swap_mode: ``"auto"``, ``"copy"`` or ``"exchange"`` (see
            :class:`~lightning_dpo.reference.weights.snapshot.HostSnapshotReference`).
        share: Keep the snapshot once per node, shared by its ranks (DDP), or ``None``.
        pin: Pin the host buffers (and a node segment) for asynchronous copies: exactly
            when the policy's parameters are on a CUDA device.
    """

    dtype: torch.dtype | None = None
    swap_mode: SwapMode = "auto"
    share: NodeShare | None = None
    pin: bool = False

    def __post_init__(self) -> None:
        if self.swap_mode not in SWAP_MODES:
            raise ValueError(f"swap_mode must be one of {SWAP_MODES}, got {self.swap_mode!r}")
        if self.share is not None and self.share.pin != self.pin:
            object.__setattr__(self, "share", replace(self.share, pin=self.pin))

    @classmethod
    def decide(
        cls,
        policy: nn.Module,
        dtype: torch.dtype | None = None,
        swap_mode: SwapMode = "auto",
        share: NodeShare | None = None,
    ) -> SnapshotPlacement:
        """The placement of a snapshot of ``policy`` as the strategy has placed it.

        The one place ``pin`` is decided: pinned exactly when a parameter of ``policy`` is
        on a CUDA device (and CUDA is available).
        """
        on_cuda = any(param.is_cuda for param in policy.parameters())
        return cls(dtype, swap_mode, share, on_cuda and torch.cuda.is_available())

    def keeping_dtypes(self) -> SnapshotPlacement:
        """This placement for a recorded snapshot: its tensors keep the dtypes they have."""
        return replace(self, dtype=None)

    def unshared(self) -> SnapshotPlacement:
        """This placement with a copy per process (no node share)."""
        return replace(self, share=None)
