"""lightning-dpo: preference optimisation for causal LMs with a managed reference policy."""

from lightning_dpo.callbacks import ReferenceSwapCallback
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.losses import PairLogps, PreferenceLoss
from lightning_dpo.module import PreferenceModule
from lightning_dpo.policy import build_policy

__all__ = [
    "PairLogps",
    "PreferenceDataModule",
    "PreferenceLoss",
    "PreferenceModule",
    "ReferenceSwapCallback",
    "build_policy",
]
__version__ = "0.1.0"
