"""Lightning data module serving tokenised preference pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields as dataclass_fields
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.collate import collate_pairs
from lightning_dpo.data.jsonl import read_jsonl
from lightning_dpo.data.records import DataValidationError, PreferenceRecord, format_location
from lightning_dpo.data.sort_task import generate_sort_splits
from lightning_dpo.data.splits import split_by_prompt
from lightning_dpo.data.tokenization import TokenizedPair, tokenize_records
from lightning_dpo.data.tokenizer_loading import load_tokenizer

_PAIR_FIELDS = frozenset(f.name for f in dataclass_fields(TokenizedPair))


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from JSON-lines files or the embedded digit-sorting task.

    Data sources:

    * no ``train_file``: the embedded sort task, ``num_train``/``num_val`` pairs with
      held-out validation prompts and verifiable rewards (chosen 1.0, rejected the
      fraction of positions it gets right), so every loss, RPO included, runs on it
      (see :func:`generate_sort_splits`);
    * ``train_file`` only: the file, with ``val_fraction`` of its distinct prompts held out
      for validation (:func:`split_by_prompt`, seeded with ``seed``);
    * ``train_file`` and ``val_file``: both files.

    Records are validated and tokenised once, in :meth:`setup`; batches follow the contract
    of :func:`collate_pairs`. ``tokenizer`` is ready right after construction.

    Args:
        tokenizer: ``None`` for the built-in character tokenizer, a local directory, or a
            tokenizer object (see :func:`load_tokenizer`).
        train_file: JSON-lines training data, or ``None`` for the embedded task.
        val_file: JSON-lines validation data (requires ``train_file``).
        val_fraction: Fraction of prompts held out when only ``train_file`` is given.
        num_train: Training pairs of the embedded task.
        num_val: Validation pairs of the embedded task.
        seed: Seed of the embedded task, the hold-out split and the training shuffle.
        batch_size: Pairs per batch (a batch holds ``2 * batch_size`` sequences).
        max_length: Maximum tokens of prompt + response.
        max_prompt_length: Maximum prompt tokens; defaults to ``max_length // 2``.
        num_workers: DataLoader worker processes.
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
    ) -> None:
        super().__init__()
        if val_file is not None and train_file is None:
            raise ValueError("val_file requires train_file")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = load_tokenizer(tokenizer)
        self.train_pairs: list[TokenizedPair] | None = None
        self.val_pairs: list[TokenizedPair] | None = None

    def _load_records(self) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
        """Reads (or generates) and validates the train and validation records."""
        hp = self.hparams
        if hp.train_file is None:
            return generate_sort_splits(hp.num_train, hp.num_val, hp.seed, with_rewards=True)
        train = read_jsonl(hp.train_file)
        if hp.val_file is None:
            return split_by_prompt(train, hp.val_fraction, hp.seed)
        return train, read_jsonl(hp.val_file)

    def setup(self, stage: str | None = None) -> None:
        """Loads, validates and tokenises all data; later calls do nothing.

        Args:
            stage: Lightning stage (unused: both splits are prepared).
        """
        if self.train_pairs is not None:
            return
        train, val = self._load_records()
        hp = self.hparams
        tokenize = partial(
            tokenize_records,
            tokenizer=self.tokenizer,
            max_length=hp.max_length,
            max_prompt_length=hp.max_prompt_length,
        )
        train_pairs, val_pairs = tokenize(train), tokenize(val)
        self.train_pairs, self.val_pairs = train_pairs, val_pairs

    def _pairs(self) -> tuple[list[TokenizedPair], list[TokenizedPair]]:
        """The tokenised splits, running :meth:`setup` first if needed."""
        self.setup()
        assert self.train_pairs is not None and self.val_pairs is not None
        return self.train_pairs, self.val_pairs

    def _loader(self, pairs: list[TokenizedPair], shuffle: bool) -> DataLoader:
        """A DataLoader over ``pairs`` with :func:`collate_pairs`."""
        workers = self.hparams.num_workers
        return DataLoader(
            pairs,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.hparams.seed) if shuffle else None,
            collate_fn=partial(collate_pairs, pad_token_id=self.tokenizer.pad_token_id),
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches."""
        return self._loader(self._pairs()[0], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order."""
        return self._loader(self._pairs()[1], shuffle=False)

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
        unknown = [f for f in fields if f not in _PAIR_FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known fields: {sorted(_PAIR_FIELDS)}")
        for split in self._pairs():
            for index, pair in enumerate(split):
                missing = [f for f in fields if getattr(pair, f) is None]
                if missing:
                    raise DataValidationError(_missing_message(pair, index, missing, reason))


def _missing_message(
    pair: TokenizedPair, index: int, missing: Sequence[str], reason: str | None
) -> str:
    """Error message for a pair lacking required fields."""
    names = ", ".join(f"'{f}'" for f in missing)
    noun = "field" if len(missing) == 1 else "fields"
    where = format_location(pair.source, pair.line, index)
    suffix = f" ({reason})" if reason else ""
    return f"{where}: missing {noun} {names} required by the loss{suffix}"
