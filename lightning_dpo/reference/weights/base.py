"""Weight references: ways to make the live policy *be* pi_ref for one forward.

A weight reference exposes one context manager, :meth:`WeightReference.reference`, inside
which the live policy computes the reference policy, and which restores the training
state on exit whether the body returned or raised. Two kinds exist:
:class:`~lightning_dpo.reference.weights.snapshot.HostSnapshotReference` (full-parameter
training: a host copy swapped in) and
:class:`~lightning_dpo.reference.weights.adapters.AdapterDisabledReference` (peft: adapters off).
:func:`reference_context` adds what every reference forward needs: ``torch.no_grad()``
and dropout off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lightning_dpo.eval_mode import eval_mode
from lightning_dpo.integrity import is_sharded


class WeightReference(Protocol):
    """What the reference callback needs of a way to reach pi_ref's weights.

    Attributes:
        kind: The name recorded in checkpoints (``"snapshot"``, ``"disable_adapters"``).
        nbytes: Host bytes it holds.
        in_flight: Whether reference weights are in the model right now.
    """

    kind: str
    nbytes: int

    @property
    def in_flight(self) -> bool:
        """Whether reference weights are in the model right now."""

    def reference(self, model: nn.Module) -> AbstractContextManager[None]:
        """Context in which ``model`` computes the reference policy."""

    def restore(self) -> None:
        """Put the training state back if a reference context is still open; else no-op."""

    def update(self, model: nn.Module, alpha: float) -> None:
        """Move the reference towards the live weights (TR-DPO), or refuse."""

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint state: ``{"reference": kind, ...}``."""


class HasWeights(Protocol):
    """Something holding a run's weight reference (``ReferenceSwapCallback`` does)."""

    @property
    def weights(self) -> WeightReference | None:
        """The weight reference, or ``None`` (a reference cache holds no weights)."""


@contextmanager
def reference_context(weights: WeightReference | None, model: nn.Module) -> Iterator[None]:
    """Run the body as the reference policy: no grad, dropout off, weights swapped.

    ``weights=None`` means ``model`` is the reference as it is (at fit start, before any
    update): nothing is swapped.
    """
    with torch.no_grad(), eval_mode(model):
        if weights is None:
            yield
            return
        with weights.reference(model):
            yield


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that require grad, by their qualified name."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def local_tensor(param: Tensor) -> Tensor:
    """The rank-local shard of a sharded (DTensor) parameter, else the tensor itself."""
    return param.to_local() if is_sharded(param) else param
