"""Validate after the last optimizer step, whatever ``val_check_interval`` says."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class LastStepValidation(Callback):
    """Run the validation loop after the final optimizer step of ``fit``.

    Lightning validates every ``val_check_interval`` batches only: a run of 70 steps
    with an interval of 50 is validated at step 50 and never at its end, and a run
    shorter than the interval never at all, so its final metrics (and the sweep's
    ``optimized_metric``) do not exist. At the last step of ``max_steps`` this callback
    sets ``trainer.should_stop``, which makes Lightning validate before it stops
    (once: a step that was due for validation anyway is not validated twice), so the
    checkpoint callbacks see the final metrics too. Runs bounded by epochs only
    (``max_steps=-1``) are left as they are.
    """

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say so when the interval is longer than the whole run."""
        interval, steps = trainer.val_check_interval, trainer.max_steps
        accumulate = trainer.accumulate_grad_batches
        if isinstance(interval, int) and steps > 0 and interval > steps * accumulate:
            rank_zero_info(
                f"Lightning's val_check_interval={interval} batches is longer than the run "
                f"(max_steps={steps} x accumulate_grad_batches={accumulate} batches): "
                "validating once, after the last step."
            )

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """At the last optimizer step, ask Lightning to validate and stop."""
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
