"""A ``ModelCheckpoint`` whose ``last.ckpt`` always holds the last step."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class LastStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that rewrites ``last.ckpt`` at every save point, not only with a top-k.

    Lightning's ``save_last=True`` (2.6) rewrites ``last.ckpt`` only when a top-k checkpoint
    is written in the same step: once the monitored metric stops improving, ``last.ckpt``
    stays at the step of the best one, and resuming from it silently throws the later
    progress away. This subclass keeps the top-k behaviour as it is and also writes
    ``last.ckpt``

    - after every validation of ``fit`` (the usual save points),
    - when ``fit`` ends (the final step, validated or not), and
    - when ``fit`` stops on an exception or Ctrl-C after completing a step (the weights of
      the last completed optimizer step; the reference callback restores an in-flight
      swap first),

    each time only if ``last.ckpt`` does not already hold the current step.

    Args:
        *args: ``ModelCheckpoint`` arguments.
        **kwargs: ``ModelCheckpoint`` keyword arguments; ``save_last`` defaults to ``True``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_last", True)
        super().__init__(*args, **kwargs)
        self._last_step_in_last: int | None = None
        self._first_step: int | None = None

    @override
    def _save_last_checkpoint(self, trainer: pl.Trainer, candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, candidates)
        if self.save_last:
            self._last_step_in_last = trainer.global_step

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the step training starts from (after a resume, the restored one)."""
        super().on_train_start(trainer, pl_module)
        self._first_step = trainer.global_step

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
        resuming, must not overwrite the ``last.ckpt`` it was given.
        """
        super().on_exception(trainer, pl_module, exception)
        if self._first_step is None or trainer.global_step <= self._first_step:
            return
        if self._refresh_last(trainer):
            rank_zero_info(
                f"{type(exception).__name__} at step {trainer.global_step}: "
                f"last.ckpt holds step {trainer.global_step} ({self.last_model_path})"
            )
