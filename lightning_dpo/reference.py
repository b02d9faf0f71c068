"""Reference-policy strategies: ways to run the frozen pi_ref without a second model.

Each strategy exposes one context manager, :meth:`reference`, inside which the live
policy module *is* the reference policy, and which restores the training state on
exit, whether the body returned or raised. :func:`reference_context` adds what
every reference forward needs around it: ``torch.no_grad()`` and dropout off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import torch
from torch import Tensor, nn


class ReferenceStrategy(Protocol):
    """What :class:`~lightning_dpo.callbacks.ReferenceSwapCallback` needs of a strategy."""

    def reference(self, model: nn.Module) -> AbstractContextManager[None]:
        """Context in which ``model`` computes the reference policy."""

    def restore(self) -> None:
        """Put the training state back if a reference context is still open; else no-op."""


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch every submodule to eval mode, then restore each one's previous flag.

    Restores the flags the modules had (not a constant), so a partly frozen model in
    mixed train/eval modes comes back exactly as it was.
    """
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in previous:
            module.training = was_training


@contextmanager
def reference_context(strategy: ReferenceStrategy, model: nn.Module) -> Iterator[None]:
    """Run the body as the reference policy: no grad, dropout off, weights swapped."""
    with torch.no_grad(), eval_mode(model), strategy.reference(model):
        yield


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that require grad, by their qualified name."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def _host_buffer_like(tensor: Tensor, pin_memory: bool) -> Tensor:
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin_memory)


class HostSnapshotReference:
    """Full-parameter reference: a host-memory copy swapped into the live weights.

    The snapshot holds the trainable parameters (frozen ones are the reference already),
    matched by name. Entering :meth:`reference` stashes each training weight into a
    preallocated host buffer and copies the reference weight into the parameter in
    place, one tensor at a time, so the device never holds two copies of the model.
    Leaving it copies the stashed training weights back.

    Args:
        snapshot: Reference weights by parameter name (host tensors).
        pin_memory: Pin the host buffers (for fast, asynchronous device copies on CUDA).
    """

    def __init__(self, snapshot: dict[str, Tensor], pin_memory: bool = False) -> None:
        self.pin_memory = pin_memory
        self.snapshot = {
            name: _host_buffer_like(tensor, pin_memory).copy_(tensor)
            for name, tensor in snapshot.items()
        }
        self._stash: dict[str, Tensor] = {}
        self._swapped: list[tuple[nn.Parameter, Tensor]] = []

    @classmethod
    def capture(cls, model: nn.Module) -> HostSnapshotReference:
        """Snapshot the trainable parameters of ``model`` as it is now."""
        params = trainable_parameters(model)
        if not params:
            raise ValueError("the model has no parameter that requires grad: nothing to snapshot")
        pin = any(param.is_cuda for param in params.values())
        with torch.no_grad():
            return cls({name: param.detach() for name, param in params.items()}, pin)

    @property
    def nbytes(self) -> int:
        """Host bytes held by the snapshot (the stash buffers hold as many again)."""
        return sum(t.numel() * t.element_size() for t in self.snapshot.values())

    @property
    def in_flight(self) -> bool:
        """Whether reference weights are in the model right now."""
        return bool(self._swapped)

    def _match(self, model: nn.Module) -> list[tuple[nn.Parameter, Tensor, Tensor]]:
        params = dict(model.named_parameters())
        missing = sorted(set(self.snapshot) - set(params))
        if missing:
            raise RuntimeError(
                f"reference snapshot names parameters the model lacks: {missing[:5]}"
            )
        triples = []
        for name, ref in self.snapshot.items():
            param = params[name]
            if param.shape != ref.shape or param.dtype != ref.dtype:
                raise RuntimeError(
                    f"reference snapshot '{name}' is {tuple(ref.shape)} {ref.dtype}, "
                    f"the model's parameter is {tuple(param.shape)} {param.dtype}"
                )
            if name not in self._stash:
                self._stash[name] = _host_buffer_like(ref, self.pin_memory)
            triples.append((param, ref, self._stash[name]))
        return triples

    @contextmanager
    def reference(self, model: nn.Module) -> Iterator[None]:
        """Swap the reference weights into ``model`` in place; restore them on exit."""
        if self.in_flight:
            raise RuntimeError("a reference swap is already in flight: nested swaps are refused")
        triples = self._match(model)
        try:
            with torch.no_grad():
                for param, ref, stash in triples:
                    stash.copy_(param, non_blocking=self.pin_memory)
                    self._swapped.append((param, stash))
                    param.copy_(ref, non_blocking=self.pin_memory)
            yield
        finally:
            self.restore()

    def restore(self) -> None:
        """Copy the stashed training weights back; a no-op when nothing is swapped."""
        with torch.no_grad():
            while self._swapped:
                param, stash = self._swapped.pop()
                param.copy_(stash, non_blocking=self.pin_memory)

    def state_dict(self) -> dict[str, Tensor]:
        """The reference weights by parameter name (host tensors)."""
        return dict(self.snapshot)


class AdapterDisabledReference:
    """LoRA reference: the base model, reached by disabling the peft adapters.

    No weights are copied: :meth:`peft.PeftModel.disable_adapter` routes the forward
    around the adapters and re-enables them on exit.
    """

    nbytes = 0
    in_flight = False

    @contextmanager
    def reference(self, model: nn.Module) -> Iterator[None]:
        """Disable the adapters of the peft ``model`` for the body."""
        if not hasattr(model, "disable_adapter"):
            raise TypeError(
                f"{type(model).__name__} is not a peft model: the adapter-disabled reference "
                "needs one (use the host snapshot for full-parameter training)"
            )
        with model.disable_adapter():
            yield

    def restore(self) -> None:
        """Nothing to restore: ``disable_adapter`` re-enables the adapters itself."""
