"""Micro-batches grouped by optimizer step, so the reference is swapped in once per step.

With ``Trainer(accumulate_grad_batches=k)`` one optimizer step consumes ``k``
micro-batches. :class:`WindowedDataLoader` collates those ``k`` together (a *window*)
and then yields them one by one, exactly the micro-batches a plain ``DataLoader`` with
``batch_size=micro_batch_size`` would yield, in the same order. Each micro-batch carries,
under :data:`WINDOW_KEY`, a :class:`WindowSlot`: its place in the shared
:class:`MicroBatchWindow`, through which
:class:`~lightning_dpo.callbacks.ReferenceSwapCallback` reaches the window's other,
still-to-come micro-batches at the first one and computes all their reference log-probs
inside one swap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

from torch.utils.data import DataLoader

WINDOW_KEY = "reference_window"
"""Batch key of the :class:`WindowSlot` of a windowed micro-batch."""


class MicroBatchWindow:
    """The host micro-batches of one optimizer step and, once computed, their reference log-probs.

    A plain class on purpose (not a dataclass, mapping or sequence, no ``.to``): Lightning's
    batch transfer passes it through untouched, by identity, so every micro-batch of the
    step reaches the same window object.

    Attributes:
        batches: The host micro-batches; an entry becomes ``None`` once consumed.
        reference_logps: Per micro-batch ``[2B]`` reference log-probs, ``None`` until
            computed and again once handed out.
        reference_version: Which reference computed them (the callback's counter of
            reference updates), ``None`` before.
    """

    __slots__ = ("batches", "reference_logps", "reference_version")

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches: list[dict[str, Any] | None] = list(batches)
        self.reference_logps: list[Any] = [None] * len(batches)
        self.reference_version: int | None = None

    def __repr__(self) -> str:
        return f"MicroBatchWindow({len(self.batches)} micro-batches)"


class WindowSlot:
    """Where one micro-batch sits in its :class:`MicroBatchWindow`.

    Attributes:
        window: The window shared by the optimizer step's micro-batches.
        position: This micro-batch's index in the window.
    """

    __slots__ = ("position", "window")

    def __init__(self, window: MicroBatchWindow, position: int) -> None:
        self.window = window
        self.position = position

    def __repr__(self) -> str:
        return f"WindowSlot({self.position} of {len(self.window.batches)})"


def collate_window(
    samples: Sequence[Any],
    collate: Callable[[Sequence[Any]], dict[str, Any]],
    micro_batch_size: int,
) -> list[dict[str, Any]]:
    """Collate ``samples`` into micro-batches of ``micro_batch_size`` that share one window.

    Each micro-batch is collated on its own (padded to its own longest row), so it is
    exactly the batch a plain loader would give; each gets its :class:`WindowSlot`.
    """
    batches = [
        collate(samples[start : start + micro_batch_size])
        for start in range(0, len(samples), micro_batch_size)
    ]
    window = MicroBatchWindow(batches)
    for position, batch in enumerate(batches):
        batch[WINDOW_KEY] = WindowSlot(window, position)
    return batches


class WindowedDataLoader(DataLoader):
    """A ``DataLoader`` that yields micro-batches, collated ``window`` at a time.

    It reads ``micro_batch_size * window`` samples per fetch (so each worker collates a
    whole window) and yields the window's micro-batches one by one. Everything else is a
    ``DataLoader``'s: Lightning can still swap the sampler for a distributed one, and
    ``len()`` counts micro-batches.

    Args:
        dataset: The samples.
        micro_batch_size: Samples per yielded batch (the last one of an epoch may be smaller).
        window: Micro-batches per window (the trainer's ``accumulate_grad_batches``).
        collate_fn: Collates a list of samples into one batch dictionary.
        **kwargs: Passed to ``DataLoader`` (``sampler``, ``num_workers``, ...);
            ``batch_size`` is set here.
    """

    def __init__(
        self,
        dataset: Any,
        micro_batch_size: int,
        window: int,
        collate_fn: Callable[[Sequence[Any]], dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        if micro_batch_size < 1 or window < 1:
            raise ValueError(
                f"micro_batch_size and window must be >= 1, got {micro_batch_size} and {window}"
            )
        if kwargs.get("drop_last"):
            raise ValueError("WindowedDataLoader does not drop batches: drop_last must be False")
        self.micro_batch_size = micro_batch_size
        self.window = window
        collate = partial(collate_window, collate=collate_fn, micro_batch_size=micro_batch_size)
        super().__init__(
            dataset, batch_size=micro_batch_size * window, collate_fn=collate, **kwargs
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for window in super().__iter__():
            yield from window

    def __len__(self) -> int:
        """Micro-batches per epoch (of the sampler in use, e.g. one rank's share)."""
        full_windows, rest = divmod(len(self.sampler), self.micro_batch_size * self.window)
        return full_windows * self.window + math.ceil(rest / self.micro_batch_size)
