"""What the reference callback needs of the LightningModule it serves."""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from lightning_dpo.batch import PreferenceBatch

REQUIRED = ("policy", "reference_free", "sequence_logps", "logps_settings")


class ReferenceScoredModule(Protocol):
    """A module whose batches the reference callback scores (``PreferenceModule`` is one).

    Attributes:
        policy: The ``nn.Module`` being trained; the reference forward runs through it.
        reference_free: When true, the loss needs no reference log-probs at all.
    """

    policy: nn.Module
    reference_free: bool

    def sequence_logps(self, batch: PreferenceBatch) -> Any:
        """Per-row summed log-probs of the batch (``.sums``: ``[2B]``) under ``policy``."""

    def logps_settings(self) -> dict[str, object]:
        """What besides weights and data changes those log-probs (the cache key)."""


def check_module(module: object) -> None:
    """Refuse a module that lacks what :class:`ReferenceScoredModule` describes.

    Raises:
        TypeError: Naming every missing attribute.
    """
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise TypeError(
            f"ReferenceSwapCallback needs the LightningModule to define {missing} (as "
            f"lightning_dpo.PreferenceModule does); {type(module).__name__} lacks them"
        )
