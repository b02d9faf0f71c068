"""The scoring plan: how a policy's batches are laid out and scored, decided once, handed on.

:func:`~lightning_dpo.scoring.probes.resolve_plan` probes the policy once where the
objects are built (``train.py``'s ``build``, or :meth:`PreferenceModule.setup
<lightning_dpo.module.PreferenceModule.setup>` in a Trainer of your own) and the
:class:`ScoringPlan` goes to the data module (which lays batches out in ``plan.layout``)
and to the module (which scores them as the plan says). No consumer re-derives it from a
batch's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lightning_dpo.layouts.masks import attention_implementation, mask_unsupported
from lightning_dpo.layouts.rows import LAYOUTS

DEFAULT_LOGPS_CHUNK_SIZE = 64
"""Positions scored at a time (``module.logps_chunk_size``); ``None``: the plain path."""

RUNNABLE_LAYOUTS = tuple(name for name in LAYOUTS if name != "auto")
"""The layouts a plan can hold (``auto`` is resolved to one of them)."""


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``chunk_size``, checked: a positive number of positions or ``None``.

    Raises:
        ValueError: Naming ``module.logps_chunk_size`` and what it accepts.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(
            f"module.logps_chunk_size must be a positive number of positions or None, "
            f"got {chunk_size}"
        )
    return chunk_size


@dataclass(frozen=True)
class ScoringPlan:
    """How the batches of one policy are laid out and scored.

    Attributes:
        layout: ``padded``, ``prefix_shared`` or ``packed``
            (:mod:`lightning_dpo.layouts.rows`).
        response_only: Score through the response-only LM head
            (:mod:`lightning_dpo.scoring.head`) instead of the model's logits.
        chunk_size: Positions scored at a time; ``None`` for the plain computation (which
            the response-only head cannot use).
        attention: The policy's attention implementation, for a shared layout's mask.
    """

    layout: str = "padded"
    response_only: bool = False
    chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.layout not in RUNNABLE_LAYOUTS:
            raise ValueError(
                f"a scoring plan's layout must be one of {list(RUNNABLE_LAYOUTS)}, "
                f"got {self.layout!r}"
            )
        check_chunk_size(self.chunk_size)
        if self.response_only and self.chunk_size is None:
            raise ValueError("the response-only head scores in chunks: it needs a chunk_size")

    @property
    def shared_rows(self) -> bool:
        """Whether rows share a prompt (``prefix_shared``, ``packed``): a custom mask."""
        return self.layout != "padded"

    @classmethod
    def unprobed(
        cls,
        model: nn.Module,
        layout: str = "padded",
        response_only: bool = False,
        chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
    ) -> ScoringPlan:
        """A plan chosen by hand for ``model``, not probed (tests, benchmarks, probes).

        Raises:
            ValueError: A shared layout on a model whose attention cannot take its mask.
        """
        reason = mask_unsupported(model) if layout != "padded" else None
        if reason is not None:
            raise ValueError(f"a prefix_shared or packed batch cannot run: {reason}")
        return cls(layout, response_only, chunk_size, attention_implementation(model))
