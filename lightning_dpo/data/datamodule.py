"""Lightning data module serving tokenised preference pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.batches.loaders import pair_loader
from lightning_dpo.data.pipeline import read_splits, tokenize_split
from lightning_dpo.data.records.validation import SkipReport
from lightning_dpo.data.report import SplitStats, announce
from lightning_dpo.data.requirements import require_pair_fields
from lightning_dpo.data.settings import (
    BatchSettings,
    DataSource,
    RecordSettings,
    TokenSettings,
    as_settings,
)
from lightning_dpo.data.tokens.fingerprints import pairs_fingerprint, tokenizer_fingerprint
from lightning_dpo.data.tokens.tokenizer_loading import load_tokenizer
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.scoring.plan import ScoringPlan

Group = Mapping[str, Any] | None


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from local files, saved or cached datasets, or the embedded task.

    The data goes through three stages, each with its settings group
    (:mod:`lightning_dpo.data.settings`; in ``train.py``, ``data.source``,
    ``data.records``, ``data.tokens``, ``data.batches``):

    * records (``source``, ``records``): without a file, the embedded sort task,
      ``num_train``/``num_val`` pairs with held-out validation prompts and verifiable
      rewards, so every loss, RPO included, runs on it (see :func:`generate_sort_splits`);
      with ``train_file`` only, any source :func:`~lightning_dpo.data.records.rows.read_rows`
      reads (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.parquet``, a folder of them, a
      ``save_to_disk`` folder, a Hub dataset already in the local cache), with
      ``val_fraction`` of its distinct prompts held out (seeded); with ``val_file`` too,
      both. Explicit, implicit and conversational records (TRL, ShareGPT, OpenAI) are
      validated, refused or skipped per ``on_invalid``;
    * tokens (``tokens``): tokenised once in :meth:`setup` (reused across runs through
      ``cache_dir``); over-long records are cut, not refused: the prompt keeps its end (by
      default cut only as far as the longer response needs, never below
      ``max_length // 2``), the responses their start;
    * batches (``batches``): by pair count or token budget, laid out as the scoring plan
      says (:meth:`connect`), each optimizer step's micro-batches carried together;
      batches follow the contract of :func:`collate_pairs`, ``pair_index`` included.

    ``tokenizer`` is ready right after construction. :meth:`setup` prints and logs the
    data report: per source the records read, kept and refused (by reason), per split the
    empty responses, cuts and unknown tokens (see ``skipped``, ``stats``).

    Args:
        tokenizer: ``None`` for a built-in tokenizer (byte-level for file data, the
            character tokenizer for the embedded task), a local directory, or a tokenizer
            object (see :func:`load_tokenizer`).
        source: Where the records come from (:class:`DataSource`, or a mapping of its
            fields; ``None``: the embedded task).
        records: How rows are read and validated (:class:`RecordSettings`).
        tokens: How records become token ids (:class:`TokenSettings`).
        batches: How pairs become batches (:class:`BatchSettings`).
        seed: Seed of the embedded task, the hold-out split and the training shuffle.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        source: DataSource | Group = None,
        records: RecordSettings | Group = None,
        tokens: TokenSettings | Group = None,
        batches: BatchSettings | Group = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = as_settings(DataSource, source)
        self.records = as_settings(RecordSettings, records)
        self.tokens = as_settings(TokenSettings, tokens)
        self.batches = as_settings(BatchSettings, batches)
        self.seed = seed
        groups = ("source", "records", "tokens", "batches")
        self.save_hyperparameters({**{g: asdict(getattr(self, g)) for g in groups}, "seed": seed})
        self.tokenizer = load_tokenizer(tokenizer, text_data=self.source.train_file is not None)
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
        """``data.batches.layout`` as given: ``auto`` or a layout name (the plan decides)."""
        return self.batches.layout

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
            rank_zero_info("data.batches.layout=auto without a scoring plan to follow: padded.")
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
        tokenizer, on_invalid = self.tokenizer, self.records.on_invalid
        train, val, self._reports = read_splits(self.source, self.records, tokenizer, self.seed)
        (train_pairs, train_stats), (val_pairs, val_stats) = (
            tokenize_split(records, split, tokenizer, self.tokens, on_invalid, self._reports[split])
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
            settings = {
                "max_length": self.tokens.max_length,
                "max_prompt_length": self.tokens.max_prompt_length,
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

    def _loader(self, pairs: list[TokenizedPair], train: bool, **ranks: int | None) -> DataLoader:
        """Batches of ``pairs`` in the layout, as planned (shuffled and windowed for training)."""
        return pair_loader(
            pairs,
            self.tokenizer,
            self.layout(),
            self.batches,
            seed=self.seed,
            train=train,
            window=self.trainer.accumulate_grad_batches if train and self.trainer else 1,
            **ranks,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches, each step's carried together (``step_windows``)."""
        return self._loader(self._pairs()[0], train=True)

    def ordered_dataloader(self, split: str, num_replicas: int = 1, rank: int = 0) -> DataLoader:
        """Batches of ``split`` (``"train"`` or ``"val"``) in order, every pair once.

        Used to precompute per-pair values keyed by ``pair_index`` (a cache of them).
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
