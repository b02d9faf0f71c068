"""Log-prob sources: where a batch's reference log-probs come from.

:class:`SwapSource` runs the reference forward, with a weight reference entered around it
(one *bracket* per batch, or per optimizer step for a window of micro-batches);
:class:`~lightning_dpo.reference.cache.source.CachedSource` looks precomputed log-probs up
by ``pair_index``. The reference callback holds one source (:class:`LogpsSource`) and calls
the same three methods on either kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from torch import Tensor, nn

from lightning_dpo.batch import PreferenceBatch
from lightning_dpo.data.batches.windows import WindowSlot
from lightning_dpo.reference.cache.store import PairChunk, pair_logps_chunks
from lightning_dpo.reference.weights.base import WeightReference, reference_context


class ReferenceScorer:
    """The reference forward, wired to one trainer's pieces.

    Args:
        policy: The live policy.
        score: Device batch -> ``[2B]`` summed log-probs (the module's ``sequence_logps``).
        forward_context: The precision plugin's forward context (autocast).
        to_device: Host batch -> device batch (the strategy's ``batch_to_device``).
    """

    def __init__(
        self,
        policy: nn.Module,
        score: Callable[[PreferenceBatch], Tensor],
        forward_context: Callable[[], AbstractContextManager[Any]],
        to_device: Callable[[Any], Any],
    ) -> None:
        self.policy = policy
        self.score = score
        self.forward_context = forward_context
        self.to_device = to_device

    @classmethod
    def wired(cls, trainer: Any, module: Any) -> ReferenceScorer:
        """The reference forward of ``module`` (``sequence_logps``) on ``trainer``'s pieces."""
        return cls(
            module.policy,
            lambda batch: module.sequence_logps(batch).sums,
            trainer.precision_plugin.forward_context,
            trainer.strategy.batch_to_device,
        )

    def bracket(self, weights: WeightReference | None, batches: Iterable[Any]) -> list[Tensor]:
        """``[2B]`` log-probs of each device batch, all inside one reference bracket.

        ``weights=None``: the live model is the reference, nothing is swapped. The batches
        are drawn one at a time inside the bracket, so only one forward is alive at once.
        """
        with self.forward_context(), reference_context(weights, self.policy):
            return [self.score(batch).detach() for batch in batches]

    def pair_chunks(self, batches: Iterable[Any]) -> list[PairChunk]:
        """Each host batch's pairs and their (chosen, rejected) log-probs.

        The live policy is the reference (no weights entered): the cache's pass at fit start.
        """
        return pair_logps_chunks(
            batches, lambda batch: self.bracket(None, [self.to_device(batch)])[0]
        )


class LogpsSource(Protocol):
    """What the reference callback needs of a source of reference log-probs.

    Attributes:
        weights: The weight reference it swaps in, or ``None`` (a cache holds none).
    """

    weights: WeightReference | None

    def logps(
        self,
        split: str,
        batch: PreferenceBatch,
        slot: WindowSlot | None,
        scorer: ReferenceScorer,
    ) -> Tensor:
        """The ``[2B]`` reference log-probs of a device batch (``slot``: its window)."""

    def update(self, policy: nn.Module, alpha: float) -> None:
        """TR-DPO: move the reference towards ``policy``, or refuse."""

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint state (``{"reference": kind, ...}``)."""


class SwapSource:
    """Reference log-probs from a forward of the live policy with ``weights`` entered.

    A windowed micro-batch (``slot``) brings its optimizer step's later micro-batches
    along: the first to arrive, or the first after a reference update, computes all of
    theirs inside one bracket; the source holds them until each micro-batch arrives.

    Args:
        weights: The weight reference.
    """

    def __init__(self, weights: WeightReference) -> None:
        self.weights = weights
        self.version = 0
        """Reference updates so far (TR-DPO): a window scored before one is rescored."""
        self._held = _WindowLogps(None, -1, 0, [])
        self.brackets = 0
        """Brackets run so far (forwards with the weights entered, each around one or more
        micro-batches): what windows save is visible here (tests, ``bench_accumulation``)."""

    def logps(
        self,
        split: str,
        batch: PreferenceBatch,
        slot: WindowSlot | None,
        scorer: ReferenceScorer,
    ) -> Tensor:
        """One bracket for the batch, or for its window's micro-batches from this one on."""
        if slot is None:
            return self.bracket(scorer, [batch])[0]
        held = self._held
        if not held.answers(slot, self.version):
            later = slot.later()
            slot.consume()
            computed = self.bracket(scorer, _device_batches(batch, later, scorer))
            held = self._held = _WindowLogps(slot.window, self.version, slot.position, computed)
        else:
            slot.consume()
        return held.take(slot.position)

    @property
    def holding(self) -> int:
        """Log-probs computed for micro-batches of a window that have not arrived yet."""
        return sum(item is not None for item in self._held.logps)

    def bracket(self, scorer: ReferenceScorer, batches: Iterable[Any]) -> list[Tensor]:
        """One bracket: the weights entered once around the forwards of ``batches``."""
        self.brackets += 1
        return scorer.bracket(self.weights, batches)

    def update(self, policy: nn.Module, alpha: float) -> None:
        """Move the weights towards ``policy``; windows scored before are rescored."""
        self.weights.update(policy, alpha)
        self.version += 1

    def state_dict(self) -> dict[str, Any]:
        """The weight reference's checkpoint state."""
        return self.weights.state_dict()


class _WindowLogps:
    """The log-probs computed for one window's micro-batches, handed out one by one.

    Args:
        window: The window (compared by identity); ``None`` for none yet.
        version: The reference version that computed them.
        first: The window position of the first entry of ``logps``.
        logps: The log-probs of micro-batches ``first``, ``first + 1``, ...
    """

    __slots__ = ("logps", "version", "window")

    def __init__(self, window: Any, version: int, first: int, logps: list[Tensor]) -> None:
        self.window = window
        self.version = version
        self.logps: list[Tensor | None] = [None] * first + list(logps)

    def answers(self, slot: WindowSlot, version: int) -> bool:
        """Whether the log-probs of ``slot`` are held, computed by reference ``version``."""
        if self.window is not slot.window or self.version != version:
            return False
        return slot.position < len(self.logps) and self.logps[slot.position] is not None

    def take(self, position: int) -> Tensor:
        """Hand out micro-batch ``position``'s log-probs and let go of them."""
        logps, self.logps[position] = self.logps[position], None
        assert logps is not None
        return logps


def _device_batches(first: Any, later: list[Any], scorer: ReferenceScorer) -> Iterator[Any]:
    """``first`` (on the device already), then each later host batch moved when its turn comes."""
    yield first
    for batch in later:
        yield scorer.to_device(batch)
