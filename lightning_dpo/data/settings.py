"""The data module's settings, one typed group per stage, checked when they are made.

:class:`~lightning_dpo.data.datamodule.PreferenceDataModule` takes four groups:

- :class:`DataSource` (``data.source``): where the records come from;
- :class:`RecordSettings` (``data.records``): how rows are read and validated;
- :class:`TokenSettings` (``data.tokens``): how records become token ids;
- :class:`BatchSettings` (``data.batches``): how pairs become batches.

Each group is defined in its stage (``records/settings.py``, ``tokens/settings.py``,
``batches/settings.py``) and gathered here. They are dataclasses, registered in Hydra's
``ConfigStore`` as the schema of the ``data`` config group (:class:`DataConfig`, named
``data_schema``; ``conf/data/*.yaml`` list it in their defaults), so Hydra refuses an
unknown key or a value of the wrong type when the config is composed
(``data.batches.batch_size=abc``), before anything runs, and each group's
``__post_init__`` refuses a value out of range with one line naming its key and the valid
range (``data.batches.batch_size must be >= 1, got 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore

from lightning_dpo.data.batches.settings import BatchSettings
from lightning_dpo.data.records.settings import DataSource, RecordSettings
from lightning_dpo.data.tokens.settings import TokenSettings

__all__ = [
    "BatchSettings",
    "DataConfig",
    "DataSource",
    "RecordSettings",
    "TokenSettings",
    "as_settings",
]


Settings = TypeVar("Settings", DataSource, RecordSettings, TokenSettings, BatchSettings)


def as_settings(kind: type[Settings], given: Settings | Mapping[str, Any] | None) -> Settings:
    """``given`` as a ``kind``: itself, the defaults for ``None``, or built from a mapping.

    Raises:
        TypeError: A mapping with a key ``kind`` does not have, naming the valid keys.
    """
    if isinstance(given, kind):
        return given
    if given is None:
        return kind()
    valid = [f.name for f in fields(kind)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise TypeError(f"{kind.__name__}: unknown settings {unknown}; valid: {valid}")
    return kind(**given)


@dataclass
class DataConfig:
    """The schema of the ``data`` config group: the data module and its four groups."""

    _target_: str = "lightning_dpo.PreferenceDataModule"
    _convert_: str = "object"
    tokenizer: str | None = None
    seed: int = 0
    source: DataSource = field(default_factory=DataSource)
    records: RecordSettings = field(default_factory=RecordSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)


ConfigStore.instance().store(group="data", name="data_schema", node=DataConfig)
