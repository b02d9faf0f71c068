"""A shuffling sampler whose order depends only on (seed, epoch): resumable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Random permutation per epoch, drawn from ``seed + epoch``.

    A ``DataLoader(shuffle=True, generator=g)`` advances one generator across epochs,
    so a run resumed at epoch ``k`` would replay epoch 0's order. Lightning calls
    :meth:`set_epoch` at the start of every epoch (as for ``DistributedSampler``), so
    this sampler gives a resumed run exactly the order the uninterrupted run saw.

    Args:
        num_items: Size of the dataset.
        seed: Base seed of the permutations.
    """

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items
