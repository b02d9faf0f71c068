"""The batches of an epoch, planned up front: by pair count or by token budget, per rank.

:class:`BatchPlan` decides which pairs form each micro-batch of an epoch, which
micro-batches form each optimizer step (a *window* of ``accumulate_grad_batches``), and
which rank gets which, from ``(seed, epoch)`` alone, so a resumed run replays the order.

- Fixed size (``batch_size``): the epoch's permutation cut into batches of that many pairs.
- Token budget (``max_tokens``): pools of the permutation sorted by length, cut into
  batches whose pairs hold at most ``max_tokens`` tokens together (a pair longer than the
  budget is a batch of its own), the batches then shuffled: batches of similar lengths
  and similar totals, in random order.
- Ranks: the micro-batches are dealt round-robin (the list padded from its start to a
  multiple of the ranks, as ``DistributedSampler`` pads samples), so every rank runs as
  many micro-batches and optimizer steps as the others.

Each item the plan yields is a :class:`PlannedFetch`: a whole window's micro-batches
(``grouped``, for the reference callback's one swap per step) or one micro-batch, with the
number of pairs of its optimizer step over all micro-batches and ranks, with which the
module weighs every pair of the step alike. The plan deals the data between the ranks
itself: the Trainer must not put a distributed sampler in front of it
(``Trainer(use_distributed_sampler=False)``, as ``conf/trainer/default.yaml`` sets).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

POOL_PAIRS = 1024
"""Pairs sorted by length together when cutting token-budget batches."""


@dataclass(frozen=True)
class PlannedFetch:
    """Micro-batches collated together on this rank (item indices of the dataset).

    Attributes:
        micro_batches: A window's micro-batches in order, or one micro-batch.
        step_pairs: Pairs in their optimizer step over all micro-batches and ranks (``None``
            where the plan's windows are not known to be the optimizer steps).
    """

    micro_batches: tuple[tuple[int, ...], ...]
    step_pairs: int | None


@runtime_checkable
class EpochSampler(Protocol):
    """A sampler told each epoch (``DistributedSampler`` and the like), as Lightning tells it."""

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``."""


class BatchPlan(Sampler[PlannedFetch]):
    """A sampler of :class:`PlannedFetch` items: one rank's micro-batches of an epoch.

    Args:
        sizes: Each item's size in tokens (only read with ``max_tokens``).
        batch_size: Items per micro-batch (when ``max_tokens`` is ``None``).
        max_tokens: Token budget of a micro-batch; ``None`` for ``batch_size`` items.
        window: Micro-batches per optimizer step (``accumulate_grad_batches``).
        grouped: Fetch a window's micro-batches together (one item per optimizer step);
            else one micro-batch per item.
        steps: The windows are the trainer's optimizer steps: each item says how many
            pairs its step holds. ``False`` for a window that only groups collation.
        shuffle: Draw each epoch's order from ``seed + epoch``; else dataset order.
        seed: Base seed of the orders.
        order: A sampler of item indices to follow instead (its ``set_epoch`` is called).
        num_replicas: Ranks; ``None`` reads ``torch.distributed`` (1 when not initialised).
        rank: This rank; ``None`` likewise.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        batch_size: int = 1,
        max_tokens: int | None = None,
        window: int = 1,
        grouped: bool = True,
        steps: bool = True,
        shuffle: bool = False,
        seed: int = 0,
        order: Sampler[int] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive number of tokens, got {max_tokens}")
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.window = window
        self.grouped = grouped
        self.steps = steps
        self.shuffle = shuffle
        self.seed = seed
        self.order = order
        self.epoch = 0
        self._replicas, self._rank = num_replicas, rank
        self._planned: tuple[int, list[list[tuple[int, ...]]]] | None = None
        self._start = 0

    @property
    def num_replicas(self) -> int:
        """The ranks sharing the data."""
        if self._replicas is not None:
            return self._replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        """This process's rank."""
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def set_epoch(self, epoch: int) -> None:
        """Plan ``epoch`` (Lightning calls this at the start of every epoch)."""
        self.epoch = epoch

    def item_order(self) -> list[int]:
        """The epoch's item order: the given sampler's, a seeded permutation, or in order."""
        if self.order is not None:
            if isinstance(self.order, EpochSampler):
                self.order.set_epoch(self.epoch)
            return list(self.order)
        if not self.shuffle:
            return list(range(len(self.sizes)))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.sizes), generator=generator).tolist()

    def micro_batches(self) -> list[tuple[int, ...]]:
        """The epoch's micro-batches over all ranks, in order."""
        order = self.item_order()
        if self.max_tokens is None:
            return [
                tuple(order[i : i + self.batch_size]) for i in range(0, len(order), self.batch_size)
            ]
        batches = [
            batch
            for start in range(0, len(order), POOL_PAIRS)
            for batch in self._budget_batches(order[start : start + POOL_PAIRS], self.max_tokens)
        ]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def _budget_batches(self, pool: list[int], budget: int) -> Iterator[tuple[int, ...]]:
        """``pool`` sorted longest first, cut where the next item would pass ``budget``."""
        batch: list[int] = []
        tokens = 0
        for index in sorted(pool, key=lambda i: -self.sizes[i]):
            if batch and tokens + self.sizes[index] > budget:
                yield tuple(batch)
                batch, tokens = [], 0
            batch.append(index)
            tokens += self.sizes[index]
        if batch:
            yield tuple(batch)

    def per_rank(self) -> list[list[tuple[int, ...]]]:
        """Each rank's micro-batches of the epoch (planned once per epoch)."""
        if self._planned is None or self._planned[0] != self.epoch:
            batches, ranks = self.micro_batches(), self.num_replicas
            if ranks > 1 and batches:
                target = math.ceil(len(batches) / ranks) * ranks
                batches = [batches[i % len(batches)] for i in range(target)]
            self._planned = (self.epoch, [batches[r::ranks] for r in range(ranks)])
        return self._planned[1]

    def skip(self, micro_batches: int) -> None:
        """Start the next iteration after this many micro-batches of the epoch (resume)."""
        self._start = micro_batches

    def __iter__(self) -> Iterator[PlannedFetch]:
        ranks = self.per_rank()
        mine = ranks[self.rank]
        skipped, self._start = self._start, 0
        for start in range(0, len(mine), self.window):
            end = start + self.window
            if end <= skipped:
                continue
            pairs = sum(len(batch) for batches in ranks for batch in batches[start:end])
            pairs = pairs if self.steps else None
            batches = mine[max(start, skipped) : end]  # a resumed window: its rest
            if self.grouped:
                yield PlannedFetch(tuple(batches), pairs)
            else:
                yield from (PlannedFetch((batch,), pairs) for batch in batches)

    def __len__(self) -> int:
        """Items of this rank in the epoch: windows when ``grouped``, else micro-batches."""
        count = self.micro_batch_count()
        return math.ceil(count / self.window) if self.grouped else count

    def micro_batch_count(self) -> int:
        """Micro-batches of this rank in the epoch."""
        return len(self.per_rank()[self.rank])
