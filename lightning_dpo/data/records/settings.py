"""The settings of the records stage: where records come from, how rows are read."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_dpo.data.records.formats import DEFAULT_TURN_MARKERS, FormatOptions
from lightning_dpo.data.records.reading import RewardDefaults
from lightning_dpo.data.records.rows import resolve_train_source
from lightning_dpo.data.records.validation import check_on_invalid


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
