"""The settings of the batches stage: how pairs become batches."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_dpo.layouts.rows import check_layout


@dataclass
class BatchSettings:
    """How pairs become batches (``data.batches``).

    Attributes:
        batch_size: Pairs per batch (``2 * batch_size`` sequences), when ``max_tokens``
            is ``None``.
        max_tokens: Token budget of a batch (prompt once plus both responses of each
            pair): batches of pairs of similar length up to this many tokens.
        layout: ``"padded"``, ``"prefix_shared"``, ``"packed"`` or ``"auto"`` (the fastest
            one that is exact on the policy, decided with the scoring plan).
        step_windows: Under ``accumulate_grad_batches=k``, collate the training batches
            ``k`` at a time (the same batches, in the same order) and carry each optimizer
            step's micro-batches together, so that a callback can treat the step at once
            (the reference callback: one swap per step).
        num_workers: DataLoader worker processes.
    """

    batch_size: int = 32
    max_tokens: int | None = None
    layout: str = "auto"
    step_windows: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_layout(self.layout)
        if self.batch_size < 1:
            raise ValueError(f"data.batches.batch_size must be >= 1, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(
                f"data.batches.max_tokens must be a positive number or null, got {self.max_tokens}"
            )
        if self.num_workers < 0:
            raise ValueError(f"data.batches.num_workers must be >= 0, got {self.num_workers}")
