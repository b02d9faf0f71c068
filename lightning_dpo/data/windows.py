"""Micro-batches grouped by optimizer step, so the reference is swapped in once per step.

With ``Trainer(accumulate_grad_batches=k)`` one optimizer step consumes ``k``
micro-batches. :class:`WindowedDataLoader` collates those ``k`` together (a *window*)
and then yields them one by one, exactly the micro-batches a plain ``DataLoader`` with
``batch_size=micro_batch_size`` would yield, in the same order. Each micro-batch carries,
under :data:`~lightning_dpo.batch.WINDOW_KEY`, a :class:`WindowSlot`: its place in the
shared :class:`MicroBatchWindow`, through which the reference callback reaches the
window's other, still-to-come micro-batches at the first one and computes all their
reference log-probs inside one swap (:meth:`MicroBatchWindow.reference_logps`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

from torch.utils.data import DataLoader

from lightning_dpo.batch import WINDOW_KEY


class MicroBatchWindow:
    """The host micro-batches of one optimizer step and, once computed, their reference log-probs.

    A plain class on purpose (not a dataclass, mapping or sequence, no ``.to``): Lightning's
    batch transfer passes it through untouched, by identity, so every micro-batch of the
    step reaches the same window object.

    Attributes:
        batches: The host micro-batches; an entry becomes ``None`` once consumed.
        reference_version: Which reference computed the log-probs held (the source's
            counter of reference updates), ``None`` before.

    The per micro-batch ``[2B]`` reference log-probs are held privately, from when
    :meth:`reference_logps` computes them until each is handed out.
    """

    __slots__ = ("_logps", "batches", "reference_version")

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches: list[dict[str, Any] | None] = list(batches)
        self._logps: list[Any] = [None] * len(batches)
        self.reference_version: int | None = None

    def __repr__(self) -> str:
        return f"MicroBatchWindow({len(self.batches)} micro-batches)"

    @property
    def holds_nothing(self) -> bool:
        """Whether every micro-batch and every computed log-prob has been let go of."""
        return all(item is None for item in [*self.batches, *self._logps])

    def consume(self, position: int) -> None:
        """Drop the window's hold on micro-batch ``position`` (it has arrived)."""
        self.batches[position] = None

    def reference_logps(
        self, position: int, version: int, compute: Callable[[list[Any]], list[Any]]
    ) -> Any:
        """Micro-batch ``position``'s reference log-probs, computed with the later ones.

        The first micro-batch to arrive, or the first after a reference update (a new
        ``version``), calls ``compute`` with the host micro-batches after it; ``compute``
        returns the log-probs of that micro-batch followed by those of each later one.
        The others only pick theirs up. Handed-out entries are dropped, so the window
        holds nothing once its last micro-batch has arrived.

        Args:
            position: The arriving micro-batch.
            version: The reference's version now.
            compute: Later host micro-batches -> log-probs from ``position`` on.
        """
        self.consume(position)
        if self.reference_version != version or self._logps[position] is None:
            self._logps[position:] = compute(self.batches[position + 1 :])
            self.reference_version = version
        logps, self._logps[position] = self._logps[position], None
        return logps


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

    def consume(self) -> None:
        """The micro-batch has arrived: the window lets go of it."""
        self.window.consume(self.position)

    def reference_logps(self, version: int, compute: Callable[[list[Any]], list[Any]]) -> Any:
        """This micro-batch's reference log-probs (:meth:`MicroBatchWindow.reference_logps`)."""
        return self.window.reference_logps(self.position, version, compute)


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
