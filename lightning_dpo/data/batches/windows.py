"""Micro-batches grouped by optimizer step, so a consumer can take a whole step at once.

With ``Trainer(accumulate_grad_batches=k)`` one optimizer step consumes ``k``
micro-batches. :class:`PlannedDataLoader` collates those ``k`` together (a *window*, as
:class:`~lightning_dpo.data.batches.plan.BatchPlan` plans them) and then yields them one by
one; :class:`WindowedDataLoader` does so for fixed-size micro-batches, exactly those a plain
``DataLoader`` with ``batch_size=micro_batch_size`` would yield, in the same order. Each
micro-batch carries, under :data:`~lightning_dpo.batch.WINDOW_KEY`, a :class:`WindowSlot`:
its place in the shared :class:`MicroBatchWindow`, through which a callback reaches the
window's other, still-to-come micro-batches at the first one (the reference callback
scores a whole step inside one swap). Windows only carry the micro-batches; what is
computed from them is kept by whoever computes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_dpo.batch import STEP_PAIRS_KEY, WINDOW_KEY
from lightning_dpo.data.batches.plan import BatchPlan, PlannedFetch


class MicroBatchWindow:
    """The host micro-batches of one optimizer step, each let go of once it has arrived.

    A plain class on purpose (not a dataclass, mapping or sequence, no ``.to``): Lightning's
    batch transfer passes it through untouched, by identity, so every micro-batch of the
    step reaches the same window object.

    Attributes:
        batches: The host micro-batches; an entry becomes ``None`` once consumed.
    """

    __slots__ = ("batches",)

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches: list[dict[str, Any] | None] = list(batches)

    def __repr__(self) -> str:
        return f"MicroBatchWindow({len(self.batches)} micro-batches)"

    @property
    def holds_nothing(self) -> bool:
        """Whether every micro-batch has been let go of."""
        return all(item is None for item in self.batches)

    def consume(self, position: int) -> None:
        """Drop the window's hold on micro-batch ``position`` (it has arrived)."""
        self.batches[position] = None


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

    def later(self) -> list[dict[str, Any] | None]:
        """The host micro-batches after this one (``None`` where one has arrived already)."""
        return self.window.batches[self.position + 1 :]


class _FetchedItems(Dataset):
    """The items of a :class:`~lightning_dpo.data.batches.plan.PlannedFetch`, by micro-batch."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __getitem__(self, fetch: PlannedFetch) -> tuple[PlannedFetch, list[list[Any]]]:
        return fetch, [[self.items[i] for i in batch] for batch in fetch.micro_batches]

    def __len__(self) -> int:
        return len(self.items)


def collate_fetch(
    fetched: tuple[PlannedFetch, list[list[Any]]],
    collate: Callable[[Sequence[Any]], dict[str, Any]],
    windowed: bool,
) -> list[dict[str, Any]]:
    """Collate one fetch's micro-batches, each on its own; tag them with their step.

    Every micro-batch gets ``step_pairs`` (:data:`~lightning_dpo.batch.STEP_PAIRS_KEY`)
    where the plan knows it; when ``windowed``, also its :class:`WindowSlot` in a window
    shared by the fetch.
    """
    fetch, groups = fetched
    batches = [collate(group) for group in groups]
    if fetch.step_pairs is not None:
        step_pairs = torch.tensor(fetch.step_pairs)
        for batch in batches:
            batch[STEP_PAIRS_KEY] = step_pairs
    if windowed:
        window = MicroBatchWindow(batches)
        for position, batch in enumerate(batches):
            batch[WINDOW_KEY] = WindowSlot(window, position)
    return batches


class PlannedDataLoader(DataLoader):
    """A ``DataLoader`` that yields the micro-batches of a :class:`BatchPlan`.

    It fetches and collates one optimizer step's window at a time (so each worker collates
    a whole window) and yields its micro-batches one by one, each with ``step_pairs`` and,
    for windows of more than one micro-batch, its :class:`WindowSlot`. ``len()`` counts this
    rank's micro-batches. It is stateful (``state_dict``/``load_state_dict``): Lightning keeps
    the micro-batches consumed in the epoch in its checkpoints, and a run resumed in the
    middle of an epoch continues with the next one, exactly as the interrupted run would.

    Args:
        items: The samples (tokenised pairs).
        plan: Which samples form each micro-batch and window, on this rank.
        collate_fn: Collates a list of samples into one batch dictionary.
        **kwargs: Passed to ``DataLoader`` (``num_workers``, ``pin_memory``, ...).
    """

    def __init__(
        self,
        items: Sequence[Any],
        plan: BatchPlan,
        collate_fn: Callable[[Sequence[Any]], dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        if kwargs.get("drop_last"):
            raise ValueError(
                f"{type(self).__name__} does not drop batches: drop_last must be False"
            )
        if "sampler" in kwargs or "batch_sampler" in kwargs:
            raise ValueError(
                f"{type(self).__name__} deals its batches between the ranks itself (BatchPlan) "
                "and takes no other sampler: build the Trainer with "
                "use_distributed_sampler=False"
            )
        self.plan = plan
        self._yielded = 0
        self._resume: tuple[int, int] | None = None
        windowed = plan.grouped and plan.window > 1
        collate = partial(collate_fetch, collate=collate_fn, windowed=windowed)
        super().__init__(
            _FetchedItems(items), sampler=plan, batch_size=None, collate_fn=collate, **kwargs
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._yielded = 0
        if self._resume is not None:
            epoch, consumed = self._resume
            self._resume = None
            if epoch == self.plan.epoch:
                self.plan.skip(consumed)
                self._yielded = consumed
        for batches in super().__iter__():
            for batch in batches:
                self._yielded += 1
                yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its micro-batches this loader has handed out."""
        return {"epoch": self.plan.epoch, "micro_batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration of that epoch starts after its consumed micro-batches."""
        self._resume = (int(state["epoch"]), int(state["micro_batches"]))

    def __len__(self) -> int:
        """Micro-batches of this rank per epoch."""
        return self.plan.micro_batch_count()


class WindowedDataLoader(PlannedDataLoader):
    """A ``DataLoader`` of micro-batches of ``micro_batch_size``, collated ``window`` at a time.

    Exactly the micro-batches a plain ``DataLoader`` with ``batch_size=micro_batch_size``
    yields, in the same order, each carrying its :class:`WindowSlot`, so that
    ``ReferenceSwapCallback`` computes a whole optimizer step's reference log-probs in one
    swap. Under data parallelism the micro-batches are dealt between the ranks
    (:class:`~lightning_dpo.data.batches.plan.BatchPlan`). The window only groups collation
    (it may differ from the accumulation): no ``step_pairs``, so each micro-batch's loss is
    its own mean, as with a plain loader.

    Args:
        dataset: The samples.
        micro_batch_size: Samples per yielded batch (the last one of an epoch may be smaller).
        window: Micro-batches per window (the trainer's ``accumulate_grad_batches``).
        collate_fn: Collates a list of samples into one batch dictionary.
        sampler: The order of the samples (e.g. a shuffling sampler); default: in order.
        **kwargs: Passed to ``DataLoader`` (``num_workers``, ...).
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        micro_batch_size: int,
        window: int,
        collate_fn: Callable[[Sequence[Any]], dict[str, Any]],
        sampler: Sampler[int] | None = None,
        **kwargs: Any,
    ) -> None:
        plan = BatchPlan(
            [1] * len(dataset),
            batch_size=micro_batch_size,
            window=window,
            steps=False,
            order=sampler,
        )
        super().__init__(dataset, plan, collate_fn, **kwargs)
