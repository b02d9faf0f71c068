"""Callbacks around the training loop: checkpoints, the last validation, export, plot, samples.

The reference callback, which the loss depends on, is :mod:`lightning_dpo.reference`; the
Hydra callback that summarises a multirun is :mod:`lightning_dpo.sweep_summary`.
"""

from lightning_dpo.callbacks.checkpointing import LastStepCheckpoint
from lightning_dpo.callbacks.export import HFExportCallback, export_policy
from lightning_dpo.callbacks.last_step_validation import LastStepValidation
from lightning_dpo.callbacks.plots import TrainingPlotCallback
from lightning_dpo.callbacks.progress import StepBoundedRichProgressBar
from lightning_dpo.callbacks.samples import GreedySamplesCallback

__all__ = [
    "GreedySamplesCallback",
    "HFExportCallback",
    "LastStepCheckpoint",
    "LastStepValidation",
    "StepBoundedRichProgressBar",
    "TrainingPlotCallback",
    "export_policy",
]
