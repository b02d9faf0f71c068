"""A progress bar that does not print ``Epoch 4/-2`` for a run bounded by steps."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from typing_extensions import override


class StepBoundedRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar, naming ``max_steps`` where it would name ``max_epochs``.

    With ``max_steps`` set and ``max_epochs`` unset, Lightning's ``max_epochs`` is -1 and
    its rich bar reads ``Epoch 4/-2``; this one reads ``Epoch 4 (max_steps=300)``.
    """

    @override
    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch} (max_steps={trainer.max_steps})"
        return f"{description:{len(self.validation_description)}}"


def progress_bar() -> Callback | None:
    """The progress bar for a run: the rich one when rich is installed, else Lightning's own."""
    return StepBoundedRichProgressBar() if _RICH_AVAILABLE else None
