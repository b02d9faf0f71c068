"""A ``ModelCheckpoint`` whose ``last.ckpt`` always holds the last step."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_dpo.checkpoint_io import CheckpointWriteError, remove_orphaned_partials


class LastStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that rewrites ``last.ckpt`` at every save point, not only with a top-k.

    Lightning's ``save_last=True`` (2.6) rewrites ``last.ckpt`` only when a top-k checkpoint
    is written in the same step: once the monitored metric stops improving, ``last.ckpt``
    stays at the step of the best one, and resuming from it silently throws the later
    progress away. This subclass keeps the top-k behaviour as it is and also writes
    ``last.ckpt``

    - after every validation of ``fit`` (the usual save points),
    - every ``last_every_minutes`` of training, at the end of the optimizer step that
      passes the interval (a slow run does not hang on ``trainer.val_check_interval``),
    - when ``fit`` ends (the final step, validated or not), and
    - when ``fit`` stops on an exception or Ctrl-C after completing a step (the weights of
      the last completed optimizer step; the reference callback restores an in-flight
      swap first),

    each time only if ``last.ckpt`` does not already hold the current step.

    Args:
        *args: ``ModelCheckpoint`` arguments.
        last_every_minutes: Wall-clock minutes of training after which ``last.ckpt`` is
            rewritten at the next optimizer step's end; ``None``: only at the points above.
        **kwargs: ``ModelCheckpoint`` keyword arguments; ``save_last`` defaults to ``True``.
    """

    def __init__(self, *args: Any, last_every_minutes: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("save_last", True)
        super().__init__(*args, **kwargs)
        if last_every_minutes is not None and last_every_minutes < 0:
            raise ValueError(f"last_every_minutes must be >= 0 or None, got {last_every_minutes}")
        self.last_every_minutes = last_every_minutes
        self._last_step_in_last: int | None = None
        self._first_step: int | None = None
        self._last_written_at = time.monotonic()
        self._step_at_batch_start: int | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the folder as ``ModelCheckpoint`` does; remove temporaries of killed writes."""
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            remove_orphaned_partials(self.dirpath)

    @override
    def _save_last_checkpoint(self, trainer: pl.Trainer, candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, candidates)
        if self.save_last:
            self._last_step_in_last = trainer.global_step
            self._last_written_at = time.monotonic()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the step training starts from (after a resume, the restored one)."""
        super().on_train_start(trainer, pl_module)
        self._first_step = trainer.global_step
        self._last_written_at = time.monotonic()

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Note the step, to tell at the batch's end whether it completed an optimizer step."""
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """As ``ModelCheckpoint``; then ``last.ckpt`` once ``last_every_minutes`` have passed.

        Only at the end of an optimizer step (never between the micro-batches of one), and
        decided on rank 0 for all ranks.
        """
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.last_every_minutes is None or trainer.global_step == self._step_at_batch_start:
            return
        due = time.monotonic() - self._last_written_at >= 60 * self.last_every_minutes
        if trainer.strategy.broadcast(due):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> bool:
        """Write ``last.ckpt`` if it does not hold the current step; whether it was written."""
        if not self.save_last or self._last_step_in_last == trainer.global_step:
            return False
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return False
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return True

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Top-k as ``ModelCheckpoint`` does; then ``last.ckpt`` if it is behind."""
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final step goes into ``last.ckpt``, validated or not."""
        self._refresh_last(trainer)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """On an exception or Ctrl-C, ``last.ckpt`` gets the last completed step.

        Only once this ``fit`` has completed a step: a run that fails in setup, or while
        resuming, must not overwrite the ``last.ckpt`` it was given; and not after a failed
        checkpoint write (a full disk would fail again).
        """
        super().on_exception(trainer, pl_module, exception)
        if self._first_step is None or trainer.global_step <= self._first_step:
            return
        if isinstance(exception, CheckpointWriteError):
            return
        if self._refresh_last(trainer):
            rank_zero_info(
                f"{type(exception).__name__} at step {trainer.global_step}: "
                f"last.ckpt holds step {trainer.global_step} ({self.last_model_path})"
            )
