"""The one wiring rule: callbacks that need objects built elsewhere get them through ``connect``.

``train.py`` builds the data module, the module and the callbacks, then hands each
:class:`Wired` callback one :class:`Wiring` (:func:`~lightning_dpo.training.connect_callbacks`)
instead of letting it search ``trainer.callbacks`` or read ``trainer.datamodule``. In a
Trainer of your own, pass the same objects to the callbacks' constructors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Wiring:
    """What a callback may need that is built elsewhere.

    Attributes:
        datamodule: The run's :class:`~lightning_dpo.data.PreferenceDataModule`, or ``None``.
        reference: The reference callback (``callbacks.reference``), or ``None``.
    """

    datamodule: Any = None
    reference: Any = None


class Wired(ABC):
    """A callback wired by ``train.py`` after everything is built."""

    @abstractmethod
    def connect(self, wiring: Wiring) -> None:
        """Take what this callback needs from ``wiring``."""
