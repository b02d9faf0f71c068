"""Full-parameter reference: a host-memory snapshot swapped into the live weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dpo.errors import CheckpointError
from lightning_dpo.integrity import tensors_fingerprint
from lightning_dpo.reference.node_share import NodeShare, shared_tensors
from lightning_dpo.reference.weights.base import local_tensor, trainable_parameters
from lightning_dpo.reference.weights.placement import SnapshotPlacement


def _host_buffer_like(tensor: Tensor, pin_memory: bool, dtype: torch.dtype | None = None) -> Tensor:
    dtype = dtype or tensor.dtype
    return torch.empty(tensor.shape, dtype=dtype, device="cpu", pin_memory=pin_memory)


def _filler(snapshot: Mapping[str, Tensor]) -> Callable[[dict[str, Tensor]], None]:
    """Writes ``snapshot``'s values into a node segment's tensors (converting the dtype)."""

    def fill(views: dict[str, Tensor]) -> None:
        for name, tensor in snapshot.items():
            views[name].copy_(tensor)

    return fill


def snapshot_fingerprint(snapshot: Mapping[str, Tensor]) -> str:
    """Fingerprint of named tensors (order-independent; :func:`tensors_fingerprint`).

    A sharded (DTensor) entry is hashed whole (``full_tensor``), so every rank of a
    sharded model gets the same fingerprint.
    """
    return tensors_fingerprint(snapshot)


class HostSnapshotReference:
    """Full-parameter reference: a host-memory copy swapped into the live weights.

    The snapshot holds the trainable parameters (frozen ones are the reference already),
    matched by name; for sharded (DTensor) parameters, only the rank-local shard.
    Entering :meth:`reference` puts the reference weights into the live parameters and
    leaving it puts the training weights back, one tensor at a time, so the device
    never holds two copies of the model.

    How the snapshot is kept, the same for a fresh, restored or rebuilt one
    (:class:`~lightning_dpo.reference.weights.placement.SnapshotPlacement`): its dtype, pinning,
    node share and how it is swapped (``swap_mode``):

    - ``"exchange"``: the parameter's ``.data`` and the snapshot tensor trade places
      (no bytes move). Safe when both live on the host with the same dtype and the
      parameter is not a shard: CPU training.
    - ``"copy"``: the training weight is copied into a preallocated host stash and the
      reference copied into the parameter in place; on exit the stash is copied back.
      Used on accelerators (pinned buffers, ``non_blocking`` copies), for shards and
      for a snapshot kept in another dtype.
    - ``"auto"``: ``"exchange"`` where it is safe, ``"copy"`` elsewhere (per tensor).

    Args:
        snapshot: Reference weights by parameter name (host tensors).
        placement: How to keep and swap them (default: unpinned, each tensor's own dtype,
            ``"auto"`` swaps, a copy of this process's own).
    """

    kind = "snapshot"

    def __init__(
        self, snapshot: dict[str, Tensor], placement: SnapshotPlacement | None = None
    ) -> None:
        self.placement = placement = placement or SnapshotPlacement()
        dtype = placement.dtype
        if placement.share is None:
            self.snapshot = {
                name: _host_buffer_like(tensor, placement.pin, dtype).copy_(tensor)
                for name, tensor in snapshot.items()
            }
        else:
            specs = {n: (tuple(t.shape), dtype or t.dtype) for n, t in snapshot.items()}
            self.snapshot = shared_tensors(specs, placement.share, _filler(snapshot))
        self._stash: dict[str, Tensor] = {}
        self._swapped: list[tuple[nn.Parameter, Tensor, bool]] = []
        self._fingerprint: str | None = None

    @classmethod
    def capture(
        cls, model: nn.Module, placement: SnapshotPlacement | None = None
    ) -> HostSnapshotReference:
        """Snapshot the trainable parameters (local shards) of ``model`` as it is now.

        ``placement``: default :meth:`SnapshotPlacement.decide` for ``model`` (pinned on CUDA).
        """
        params = trainable_parameters(model)
        if not params:
            raise ValueError("the model has no parameter that requires grad: nothing to snapshot")
        with torch.no_grad():
            local = {name: local_tensor(param.detach()) for name, param in params.items()}
            return cls(local, placement or SnapshotPlacement.decide(model))

    @property
    def pin_memory(self) -> bool:
        """Whether the host buffers are pinned (the placement's ``pin``)."""
        return self.placement.pin

    @property
    def swap_mode(self) -> str:
        """How the snapshot is swapped in (the placement's)."""
        return self.placement.swap_mode

    @property
    def share(self) -> NodeShare | None:
        """The node share the snapshot lives in, or ``None`` (the placement's)."""
        return self.placement.share

    @property
    def nbytes(self) -> int:
        """Host bytes of the snapshot: per node when shared (a copy-mode stash: more per rank)."""
        return sum(t.numel() * t.element_size() for t in self.snapshot.values())

    @property
    def in_flight(self) -> bool:
        """Whether reference weights are in the model right now."""
        return bool(self._swapped)

    def check_compatible(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Match every snapshot tensor to a parameter of ``model`` by name and shape.

        Returns:
            The model's parameters by name (one walk of the model serves the caller too).

        Raises:
            RuntimeError: Naming the first missing parameter or mismatched shape.
        """
        params = dict(model.named_parameters())
        missing = sorted(set(self.snapshot) - set(params))
        if missing:
            raise RuntimeError(
                f"reference snapshot names parameters the model lacks: {missing[:5]}"
            )
        for name, ref in self.snapshot.items():
            shape = tuple(local_tensor(params[name]).shape)
            if shape != tuple(ref.shape):
                raise RuntimeError(
                    f"reference snapshot '{name}' has shape {tuple(ref.shape)}, "
                    f"the model's parameter (local shard) has shape {shape}"
                )
        return params

    def _can_exchange(self, param: Tensor, ref: Tensor) -> bool:
        if self.swap_mode == "copy":
            return False
        safe = param.device.type == "cpu" and param.dtype == ref.dtype
        safe = safe and local_tensor(param) is param
        if self.swap_mode == "exchange" and not safe:
            raise RuntimeError(
                "swap_mode='exchange' needs host parameters of the snapshot's dtype that are "
                f"not shards; got {param.device} {param.dtype} vs {ref.dtype}: use 'auto'"
            )
        return safe

    def _stash_for(self, name: str, live: Tensor) -> Tensor:
        if name not in self._stash:
            self._stash[name] = _host_buffer_like(live, self.pin_memory)
        return self._stash[name]

    @contextmanager
    def reference(self, model: nn.Module) -> Iterator[None]:
        """Put the reference weights into ``model``; restore the training ones on exit."""
        if self.in_flight:
            raise RuntimeError("a reference swap is already in flight: nested swaps are refused")
        params = self.check_compatible(model)
        try:
            with torch.no_grad():
                for name, ref in self.snapshot.items():
                    self._swap_in(name, params[name], ref)
            yield
        finally:
            self.restore()

    def _swap_in(self, name: str, param: nn.Parameter, ref: Tensor) -> None:
        if self._can_exchange(param, ref):
            self._swapped.append((param, param.data, True))
            param.data = ref
            return
        live = local_tensor(param)
        stash = self._stash_for(name, live)
        stash.copy_(live, non_blocking=self.pin_memory)
        self._swapped.append((param, stash, False))
        live.copy_(ref, non_blocking=self.pin_memory)

    def restore(self) -> None:
        """Put the training weights back; a no-op when nothing is swapped."""
        with torch.no_grad():
            while self._swapped:
                param, training, exchanged = self._swapped.pop()
                if exchanged:
                    param.data = training
                else:
                    local_tensor(param).copy_(training, non_blocking=self.pin_memory)
            if self.pin_memory:
                torch.cuda.current_stream().synchronize()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint state: the reference weights by parameter name and their fingerprint."""
        return {
            "reference": self.kind,
            "reference_snapshot": dict(self.snapshot),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        policy: nn.Module,
        placement: SnapshotPlacement,
        where: str,
    ) -> HostSnapshotReference:
        """The snapshot a checkpoint recorded, verified and matched to ``policy``.

        Args:
            state: What :meth:`state_dict` returned when the checkpoint was written.
            policy: The live (resumed) policy the reference is swapped into.
            placement: The run's placement; the recorded tensors keep their dtypes (the
                reference is what was recorded, whatever ``snapshot_dtype`` says now).
            where: The checkpoint, for messages.

        Raises:
            CheckpointError: The snapshot does not match its fingerprint, or the model.
        """
        snapshot = state["reference_snapshot"]
        if snapshot_fingerprint(snapshot) != state["fingerprint"]:
            raise CheckpointError(
                f"the reference snapshot in {where} does not match its fingerprint: "
                "the checkpoint is corrupt"
            )
        restored = cls(snapshot, placement.keeping_dtypes())
        try:
            restored.check_compatible(policy)
        except RuntimeError as error:
            raise CheckpointError(f"{where}: {error}") from None
        return restored

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the snapshot, computed once and again only after :meth:`update`."""
        if self._fingerprint is None:
            self._fingerprint = snapshot_fingerprint(self.snapshot)
        return self._fingerprint

    def update(self, model: nn.Module, alpha: float = 1.0) -> None:
        """Move the reference towards the live weights: ``ref <- (1-alpha) ref + alpha live``.

        ``alpha=1`` is a hard copy. Used for TR-DPO's periodic reference updates; refused
        while a swap is in flight (the live weights would be the reference itself). A
        node-shared snapshot is written by the node's local rank 0 alone, between barriers
        (every rank calls this; their policies are the same).
        """
        if self.in_flight:
            raise RuntimeError("cannot update the reference while it is swapped in")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"reference update alpha must be in (0, 1], got {alpha}")
        params = self.check_compatible(model)
        self._fingerprint = None
        if self.share is None:
            self._write_update(params, alpha)
            return
        self.share.barrier()  # nobody reads the reference while it changes
        if self.share.writer:
            self._write_update(params, alpha)
        self.share.barrier()

    def _write_update(self, params: Mapping[str, nn.Parameter], alpha: float) -> None:
        with torch.no_grad():
            for name, ref in self.snapshot.items():
                live = local_tensor(params[name].detach()).to("cpu", ref.dtype)
                if alpha == 1.0:
                    ref.copy_(live)
                else:
                    ref.lerp_(live, alpha)
