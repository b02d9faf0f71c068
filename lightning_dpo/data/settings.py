"""The data module's settings, one typed group per stage, checked when they are made.

:class:`~lightning_dpo.data.datamodule.PreferenceDataModule` takes four groups:

- :class:`DataSource` (``data.source``): where the records come from;
- :class:`RecordSettings` (``data.records``): how rows are read and validated;
- :class:`TokenSettings` (``data.tokens``): how records become token ids;
- :class:`BatchSettings` (``data.batches``): how pairs become batches.

They are dataclasses, registered in Hydra's ``ConfigStore`` as the schema of the
``data`` config group (:class:`DataConfig`, named ``data_schema``; ``conf/data/*.yaml``
list it in their defaults), so Hydra refuses an unknown key or a value of the wrong type
when the config is composed (``data.batches.batch_size=abc``), before anything runs, and
each group's ``__post_init__`` refuses a value out of range with one line naming its key
and the valid range (``data.batches.batch_size must be >= 1, got 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore

from lightning_dpo.data.records.formats import DEFAULT_TURN_MARKERS, FormatOptions
from lightning_dpo.data.records.reading import RewardDefaults
from lightning_dpo.data.records.rows import resolve_train_source
from lightning_dpo.data.records.validation import check_on_invalid
from lightning_dpo.data.tokens.tokenization import resolve_max_prompt_length
from lightning_dpo.layouts.rows import check_layout


@dataclass
class DataSource:
    """Where the records come from (``data.source``).

    Attributes:
        train_file: Training data source (a file, a folder of them, a ``save_to_disk``
            folder, a Hub dataset in the local cache), or ``None`` for the embedded task.
        val_file: Validation data source (requires ``train_file``).
        path: Alias of ``train_file`` (``data.source.path=...``).
        require_file: Refuse to fall back to the embedded task when no file is given.
        train_split: Split of a ``DatasetDict``/Hub source used for training.
        val_split: Split of a ``DatasetDict``/Hub ``val_file``.
        val_fraction: Fraction of prompts held out when only ``train_file`` is given.
        num_train: Training pairs of the embedded task.
        num_val: Validation pairs of the embedded task.
    """

    train_file: str | None = None
    val_file: str | None = None
    path: str | None = None
    require_file: bool = False
    train_split: str = "train"
    val_split: str = "test"
    val_fraction: float = 0.1
    num_train: int = 2048
    num_val: int = 256

    def __post_init__(self) -> None:
        self.train_file = resolve_train_source(self.train_file, self.path, self.require_file)
        if self.val_file is not None and self.train_file is None:
            raise ValueError("data.source.val_file requires data.source.train_file (or path)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.source.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("num_train", "num_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.source.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class RecordSettings:
    """How rows are read as records and validated (``data.records``).

    Attributes:
        format: ``"auto"`` (detected from the first record), ``"explicit"``,
            ``"implicit"``, ``"conversational"`` (TRL's message lists), ``"sharegpt"``
            or ``"openai"`` (:mod:`lightning_dpo.data.records.conversations`).
        columns: Our field -> the data's column, e.g. ``{"prompt": "question",
            "chosen": "response_j", "rejected": "response_k"}``.
        turn_markers: Turn boundaries that end an implicit prompt (``None``: the defaults).
        chat_template: Render plain-text records (hh-rlhf dialogues, explicit prompts)
            through the tokenizer's chat template; conversation formats always are.
        default_chosen_reward: Reward of a chosen response without one (``None``: unset).
        default_rejected_reward: Reward of a rejected response without one.
        on_invalid: ``"error"`` (refuse the data, naming every bad record) or ``"skip"``
            (drop bad records, counted per reason).
    """

    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    turn_markers: list[str] | None = None
    chat_template: bool = False
    default_chosen_reward: float | None = None
    default_rejected_reward: float | None = None
    on_invalid: str = "error"

    def __post_init__(self) -> None:
        check_on_invalid(self.on_invalid)
        self.format_options()

    def format_options(self) -> FormatOptions:
        """How rows are recognised (checked: format, columns, turn markers)."""
        markers = tuple(self.turn_markers or DEFAULT_TURN_MARKERS)
        return FormatOptions(self.format, dict(self.columns), markers, self.chat_template)

    def rewards(self) -> RewardDefaults:
        """The rewards given to responses without one."""
        return RewardDefaults(self.default_chosen_reward, self.default_rejected_reward)


@dataclass
class TokenSettings:
    """How records become token ids (``data.tokens``).

    Attributes:
        max_length: Maximum tokens of prompt + response; longer responses are cut at
            their end.
        max_prompt_length: A fixed cap on the prompt tokens, below ``max_length`` (TRL's);
            ``None``: a prompt is cut only as far as the longer response needs, never below
            ``max_length // 2`` (:func:`~lightning_dpo.data.tokens.tokenization.prompt_budget`).
        cache_dir: Folder where token ids are cached across runs, or ``None``.
    """

    max_length: int = 64
    max_prompt_length: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        resolve_max_prompt_length(self.max_length, self.max_prompt_length)


@dataclass
class BatchSettings:
    """How pairs become batches (``data.batches``).

    Attributes:
        batch_size: Pairs per batch (``2 * batch_size`` sequences), when ``max_tokens``
            is ``None``.
        max_tokens: Token budget of a batch (prompt once plus both responses of each
            pair): batches of pairs of similar length up to this many tokens.
        layout: ``"padded"``, ``"prefix_shared"``, ``"packed"`` or ``"auto"`` (the fastest
            one that is exact on the policy, decided with the scoring plan).
        step_windows: Under ``accumulate_grad_batches=k``, collate the training batches
            ``k`` at a time (the same batches, in the same order) and carry each optimizer
            step's micro-batches together, so that a callback can treat the step at once
            (the reference callback: one swap per step).
        num_workers: DataLoader worker processes.
    """

    batch_size: int = 32
    max_tokens: int | None = None
    layout: str = "auto"
    step_windows: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_layout(self.layout)
        if self.batch_size < 1:
            raise ValueError(f"data.batches.batch_size must be >= 1, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(
                f"data.batches.max_tokens must be a positive number or null, got {self.max_tokens}"
            )
        if self.num_workers < 0:
            raise ValueError(f"data.batches.num_workers must be >= 0, got {self.num_workers}")


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
