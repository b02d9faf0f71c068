"""Reference log-probs read from the cache's tables instead of computed."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_dpo.batch import PAIR_INDEX_KEY, PreferenceBatch
from lightning_dpo.data.batches.windows import WindowSlot


class CachedSource:
    """Reference log-probs looked up in precomputed ``[N, 2]`` tables by ``pair_index``.

    Args:
        tables: ``{"train": [N, 2], "val": [M, 2]}`` (chosen, rejected) by pair.
        keys: The cache key of each table (stored in checkpoints, for resume).
    """

    weights = None

    def __init__(self, tables: dict[str, Tensor], keys: dict[str, str]) -> None:
        self.tables = tables
        self.keys = keys

    def logps(
        self,
        split: str,
        batch: PreferenceBatch,
        slot: WindowSlot | None,
        scorer: object = None,
    ) -> Tensor:
        """``[2B]`` (chosen rows first) of the batch's pairs (no forward: ``scorer`` unused).

        Raises:
            KeyError: The batch has no ``pair_index``.
        """
        if slot is not None:
            slot.consume()
        if PAIR_INDEX_KEY not in batch:
            raise KeyError(f"the reference cache needs `{PAIR_INDEX_KEY}` in every batch")
        index = batch[PAIR_INDEX_KEY]
        values = self.tables[split].to(index.device)[index]
        return torch.cat([values[:, 0], values[:, 1]])

    def update(self, policy: nn.Module, alpha: float) -> None:
        """Refused: cached log-probs are of a fixed reference.

        Raises:
            TypeError: Always.
        """
        raise TypeError("a reference cache holds fixed log-probs: TR-DPO cannot update it")

    def state_dict(self) -> dict[str, Any]:
        """The cache keys of the tables."""
        return {"reference": "cache", "cache_keys": dict(self.keys)}
