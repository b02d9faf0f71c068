"""lightning-dpo: preference optimisation for causal LMs with a managed reference policy."""

from lightning_dpo.callbacks import GreedySamplesCallback, HFExportCallback, TrainingPlotCallback
from lightning_dpo.callbacks.export import export_policy
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.losses import PairLogps, PreferenceLoss
from lightning_dpo.module import PreferenceModule
from lightning_dpo.policy import build_policy
from lightning_dpo.reference import ReferenceSwapCallback

__all__ = [
    "GreedySamplesCallback",
    "HFExportCallback",
    "PairLogps",
    "PreferenceDataModule",
    "PreferenceLoss",
    "PreferenceModule",
    "ReferenceSwapCallback",
    "TrainingPlotCallback",
    "build_policy",
    "export_policy",
]
__version__ = "0.1.0"
