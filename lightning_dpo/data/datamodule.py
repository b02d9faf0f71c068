"""Lightning data module serving tokenised preference pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.batches.loaders import pair_loader
from lightning_dpo.data.pipeline import read_splits, tokenize_split
from lightning_dpo.data.records.formats import DEFAULT_TURN_MARKERS, FormatOptions
from lightning_dpo.data.records.rows import resolve_train_source
from lightning_dpo.data.records.validation import SkipReport, check_on_invalid
from lightning_dpo.data.report import SplitStats, announce
from lightning_dpo.data.requirements import require_pair_fields
from lightning_dpo.data.tokens.fingerprints import pairs_fingerprint, tokenizer_fingerprint
from lightning_dpo.data.tokens.tokenization import resolve_max_prompt_length
from lightning_dpo.data.tokens.tokenizer_loading import load_tokenizer
from lightning_dpo.layouts.rows import check_layout
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.scoring.plan import ScoringPlan


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from local files, saved or cached datasets, or the embedded task.

    Data sources:

    * no ``train_file``: the embedded sort task, ``num_train``/``num_val`` pairs with
      held-out validation prompts and verifiable rewards (chosen 1.0, rejected the
      fraction of positions it gets right), so every loss, RPO included, runs on it
      (see :func:`generate_sort_splits`);
    * ``train_file`` only: any source :func:`~lightning_dpo.data.records.rows.read_rows` reads
      (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.parquet``, a folder of them, a
      ``save_to_disk`` folder, a Hub dataset already in the local cache), with
      ``val_fraction`` of its distinct prompts held out (:func:`split_by_prompt`, seeded);
    * ``train_file`` and ``val_file``: both sources.

    Records in the explicit (``prompt``/``chosen``/``rejected`` strings), implicit (whole
    ``chosen``/``rejected`` conversations) or conversational (message lists, rendered by
    the tokenizer's chat template) format are validated, then tokenised once in
    :meth:`setup` (reused across runs through ``cache_dir``); batches follow the contract
    of :func:`collate_pairs`, ``pair_index`` included. ``tokenizer`` is ready right after
    construction. Over-long records are cut, not refused: the prompt keeps its end (by
    default cut only as far as the longer response needs, never below
    ``max_length // 2``), the responses their start. :meth:`setup` prints
    and logs the data report: per source the records read, kept and refused (by reason),
    per split the empty responses, cuts and unknown tokens (see ``skipped``, ``stats``).

    Args:
        tokenizer: ``None`` for a built-in tokenizer (byte-level for file data, the
            character tokenizer for the embedded task), a local directory, or a tokenizer
            object (see :func:`load_tokenizer`).
        train_file: Training data source, or ``None`` for the embedded task.
        val_file: Validation data source (requires ``train_file``).
        val_fraction: Fraction of prompts held out when only ``train_file`` is given.
        num_train: Training pairs of the embedded task.
        num_val: Validation pairs of the embedded task.
        seed: Seed of the embedded task, the hold-out split and the training shuffle.
        batch_size: Pairs per batch (a batch holds ``2 * batch_size`` sequences), when
            ``max_tokens`` is ``None``.
        max_length: Maximum tokens of prompt + response; longer responses are cut at
            their end.
        max_prompt_length: A fixed cap on the prompt tokens, below ``max_length`` (TRL's);
            a longer prompt is cut from its start (its latest turns stay). ``None``
            (default): a prompt is cut only when the longer response would not fit, as
            far as it needs, but never below ``max_length // 2``
            (:func:`~lightning_dpo.data.tokens.tokenization.prompt_budget`).
        num_workers: DataLoader worker processes.
        path: Alias of ``train_file`` (``data.path=...``).
        require_file: Refuse to fall back to the embedded task when no file is given.
        train_split: Split of a ``DatasetDict``/Hub source used for training.
        val_split: Split of a ``DatasetDict``/Hub ``val_file``.
        format: ``"auto"`` (detected from the first record), ``"explicit"``,
            ``"implicit"``, ``"conversational"`` (TRL's message lists), ``"sharegpt"``
            or ``"openai"`` (:mod:`lightning_dpo.data.records.conversations`).
        columns: Our field -> the data's column, e.g. ``{"prompt": "question",
            "chosen": "response_j", "rejected": "response_k"}``.
        turn_markers: Turn boundaries that end an implicit prompt.
        chat_template: Render plain-text records (hh-rlhf dialogues, explicit prompts)
            through the tokenizer's chat template; conversation formats always are.
        default_chosen_reward: Reward of a chosen response without one (``None``: unset).
        default_rejected_reward: Reward of a rejected response without one.
        on_invalid: ``"error"`` (refuse the data, naming every bad record) or ``"skip"``
            (drop bad records; a count per reason is printed and logged, see ``skipped``).
        cache_dir: Folder where token ids are cached across runs, or ``None``.
        reference_windows: When the Trainer accumulates gradients over ``k`` batches,
            collate the training batches ``k`` at a time (the same batches, in the same
            order), so that ``ReferenceSwapCallback`` computes the reference log-probs of a
            whole optimizer step in one swap.
        layout: How a batch is laid out in rows (:mod:`lightning_dpo.layouts.rows`):
            ``"padded"``, ``"prefix_shared"``, ``"packed"``, or ``"auto"``: the fastest one
            that is exact on the policy (decided with the scoring plan the module probes
            and hands in, see :meth:`connect`).
        max_tokens: Token budget of a batch (prompt once plus both responses of each
            pair): batches of pairs of similar length up to this many tokens, instead of
            ``batch_size`` pairs. ``None``: ``batch_size`` pairs.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        val_fraction: float = 0.1,
        num_train: int = 2048,
        num_val: int = 256,
        seed: int = 0,
        batch_size: int = 32,
        max_length: int = 64,
        max_prompt_length: int | None = None,
        num_workers: int = 0,
        path: str | None = None,
        require_file: bool = False,
        train_split: str = "train",
        val_split: str = "test",
        format: str = "auto",
        columns: Mapping[str, str] | None = None,
        turn_markers: Sequence[str] | None = None,
        chat_template: bool = False,
        default_chosen_reward: float | None = None,
        default_rejected_reward: float | None = None,
        on_invalid: str = "error",
        cache_dir: str | None = None,
        reference_windows: bool = True,
        layout: str = "auto",
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        check_layout(layout)
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"data.max_tokens must be a positive number or null, got {max_tokens}")
        train_file = resolve_train_source(train_file, path, require_file)
        if val_file is not None and train_file is None:
            raise ValueError("val_file requires train_file")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        check_on_invalid(on_invalid)
        resolve_max_prompt_length(max_length, max_prompt_length)
        self.format_options = FormatOptions(
            format, dict(columns or {}), tuple(turn_markers or DEFAULT_TURN_MARKERS), chat_template
        )
        self.save_hyperparameters(ignore=["tokenizer"])
        self.hparams.train_file = train_file
        self.tokenizer = load_tokenizer(tokenizer, text_data=train_file is not None)
        self.train_pairs: list[TokenizedPair] | None = None
        self.val_pairs: list[TokenizedPair] | None = None
        #: Per-source skip reports of the last :meth:`setup` (counts are zero in error mode).
        self.skipped: list[SkipReport] = []
        #: Per-split tokenisation statistics of the last :meth:`setup` (train, val).
        self.stats: list[SplitStats] = []
        self._reports: dict[str, SkipReport] = {}
        self._fingerprints: dict[str, str] = {}
        #: How the scoring side reads the batches (:meth:`connect`); ``None`` until handed in.
        self.plan: ScoringPlan | None = None
        self._said_padded = False

    def connect(self, *, plan: ScoringPlan) -> None:
        """Receive the scoring plan: batches are laid out in ``plan.layout`` from now on.

        ``train.py`` (or :meth:`PreferenceModule.setup
        <lightning_dpo.module.PreferenceModule.setup>` under a Trainer of your own) decides
        the plan once, against :attr:`requested_layout`
        (:func:`~lightning_dpo.scoring.probes.resolve_plan`), and hands it here.
        """
        self.plan = plan

    @property
    def requested_layout(self) -> str:
        """``data.layout`` as given: ``auto`` or a layout name (the plan decides)."""
        return self.hparams.layout

    def layout(self) -> str:
        """The layout batches are built in: the plan's; without one, ``padded`` for ``auto``.

        The data module used on its own (no plan handed in) builds ``auto`` as ``padded``,
        which every model scores exactly, and an explicit layout as asked.
        """
        if self.plan is not None:
            return self.plan.layout
        if self.requested_layout != "auto":
            return self.requested_layout
        if not self._said_padded:
            rank_zero_info("data.layout=auto without a scoring plan to follow: padded.")
            self._said_padded = True
        return "padded"

    def setup(self, stage: str | None = None) -> None:
        """Loads, validates and tokenises all data, then reports it; later calls do nothing.

        The data report (:func:`~lightning_dpo.data.report.announce`) is printed and
        logged: per source, records read, kept and refused per reason (``on_invalid="skip"``);
        per split, empty responses, prompts and responses cut, unknown tokens.

        Args:
            stage: Lightning stage (unused: both splits are prepared).
        """
        if self.train_pairs is not None:
            return
        hp, tokenizer = self.hparams, self.tokenizer
        train, val, self._reports = read_splits(hp, tokenizer, self.format_options)
        (train_pairs, train_stats), (val_pairs, val_stats) = (
            tokenize_split(records, split, tokenizer, hp, self._reports[split])
            for records, split in ((train, "train"), (val, "val"))
        )
        self.skipped = list({id(r): r for r in self._reports.values()}.values())
        self.stats = [train_stats, val_stats]
        announce(self._reports, self.stats)
        self.train_pairs, self.val_pairs = train_pairs, val_pairs

    def fingerprint(self, split: str) -> str:
        """Stable sha256 hex digest of a split's tokenised content and tokenisation settings.

        Covers every pair's token ids, its prompt/response boundary and rewards, in
        ``pair_index`` order, plus ``max_length``, ``max_prompt_length`` and the tokenizer's
        fingerprint; not the file paths. Equal across processes and runs for the same data
        and settings, different when any of them changes. Runs :meth:`setup` if needed.

        Args:
            split: ``"train"`` or ``"val"``.

        Returns:
            A 64-character hex digest.

        Raises:
            ValueError: For another split name.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be one of ('train', 'val'), got {split!r}")
        if split not in self._fingerprints:
            train, val = self._pairs()
            hp = self.hparams
            settings = {
                "max_length": hp.max_length,
                "max_prompt_length": hp.max_prompt_length,
                "tokenizer": tokenizer_fingerprint(self.tokenizer),
            }
            pairs = train if split == "train" else val
            self._fingerprints[split] = pairs_fingerprint(pairs, settings)
        return self._fingerprints[split]

    def _pairs(self) -> tuple[list[TokenizedPair], list[TokenizedPair]]:
        """The tokenised splits, running :meth:`setup` first if needed."""
        self.setup()
        assert self.train_pairs is not None and self.val_pairs is not None
        return self.train_pairs, self.val_pairs

    def _loader(self, pairs: list[TokenizedPair], train: bool, **ranks: int) -> DataLoader:
        """Batches of ``pairs`` in the layout, as planned (shuffled and windowed for training)."""
        hp = self.hparams
        return pair_loader(
            pairs,
            self.tokenizer,
            self.layout(),
            batch_size=hp.batch_size,
            max_tokens=hp.max_tokens,
            seed=hp.seed,
            train=train,
            window=self.trainer.accumulate_grad_batches if train and self.trainer else 1,
            grouped=hp.reference_windows,
            num_workers=hp.num_workers,
            **ranks,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches, in optimizer-step windows (``reference_windows``)."""
        return self._loader(self._pairs()[0], train=True)

    def ordered_dataloader(self, split: str, num_replicas: int = 1, rank: int = 0) -> DataLoader:
        """Batches of ``split`` (``"train"`` or ``"val"``) in order, every pair once.

        Used to precompute per-pair values keyed by ``pair_index`` (the reference cache).
        With ``num_replicas`` processes, ``rank``'s share: the batches one process would
        get, dealt round-robin (the first ones repeated so that every share has as many).
        """
        splits = dict(zip(("train", "val"), self._pairs(), strict=True))
        if split not in splits:
            raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
        return self._loader(splits[split], train=False, num_replicas=num_replicas, rank=rank)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, dealt between the ranks."""
        return self._loader(self._pairs()[1], train=False)

    @property
    def has_rewards(self) -> bool:
        """Whether every train and validation pair has both rewards (runs setup if needed)."""
        train, val = self._pairs()
        return all(p.has_rewards for p in [*train, *val])

    def require_fields(self, fields: Sequence[str], reason: str | None = None) -> None:
        """Checks that every pair has the given fields (e.g. rewards needed by a loss).

        Runs :meth:`setup` first if needed.

        Args:
            fields: Optional record fields that must be set, e.g.
                ``("chosen_reward", "rejected_reward")``.
            reason: Appended in parentheses to the error message, e.g. the loss name.

        Raises:
            DataValidationError: Naming the first offending record (file and line, or
                source and index for generated data) and the fields it lacks.
            ValueError: If a field name is not a field of the pairs.
        """
        require_pair_fields(self._pairs(), fields, reason)
