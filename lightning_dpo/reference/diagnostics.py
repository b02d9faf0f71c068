"""A spy that counts the reference brackets a run takes, for tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lightning_dpo.reference.sources import SwapSource


class BracketCounter:
    """Counts reference brackets (forwards with a weight reference entered), per callback.

    Nothing is counted unless the counter is active: while it is, every
    ``SwapSource.bracket`` is counted against its source. A cache runs none (its pass at
    fit start enters no weights).

    Example::

        with BracketCounter() as brackets:
            trainer.fit(module, datamodule=datamodule)
        assert brackets.of(reference_callback) == trainer.global_step
    """

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self._original: Any = None

    def __enter__(self) -> BracketCounter:
        original = self._original = SwapSource.bracket
        counts = self.counts

        def bracket(source: SwapSource, scorer: Any, batches: Any) -> Any:
            counts[id(source)] += 1
            return original(source, scorer, batches)

        SwapSource.bracket = bracket  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        SwapSource.bracket = self._original  # type: ignore[method-assign]

    def of(self, callback: Any) -> int:
        """Brackets run by a ``ReferenceSwapCallback`` while counting (0 with a cache)."""
        return self.counts[id(callback.source)]
