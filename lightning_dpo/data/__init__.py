"""Preference data, in three stages, and the data module that runs them.

- :mod:`~lightning_dpo.data.records`: rows read from a source and validated as records;
- :mod:`~lightning_dpo.data.tokens`: records tokenised once (and cached) into pairs;
- :mod:`~lightning_dpo.data.batches`: pairs planned into batches, collated, windowed.

:mod:`~lightning_dpo.data.settings` holds one typed settings group per stage (and their
Hydra schema); :mod:`~lightning_dpo.data.pipeline` runs records then tokens per split;
:mod:`~lightning_dpo.data.datamodule` is the ``PreferenceDataModule``.
"""

from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.data.batches.windows import WindowedDataLoader
from lightning_dpo.data.datamodule import PreferenceDataModule
from lightning_dpo.data.records.formats import FormatOptions
from lightning_dpo.data.records.jsonl import read_jsonl
from lightning_dpo.data.records.reading import RewardDefaults, load_records
from lightning_dpo.data.records.record import DataValidationError, PreferenceRecord
from lightning_dpo.data.records.rows import read_rows
from lightning_dpo.data.records.sort_task import generate_sort_splits, generate_sort_task
from lightning_dpo.data.records.splits import split_by_prompt
from lightning_dpo.data.records.validation import SkipReport
from lightning_dpo.data.report import SplitStats
from lightning_dpo.data.settings import BatchSettings, DataSource, RecordSettings, TokenSettings
from lightning_dpo.data.tokens.byte_tokenizer import build_byte_tokenizer
from lightning_dpo.data.tokens.char_tokenizer import build_char_tokenizer
from lightning_dpo.data.tokens.tokenization import tokenize_record, tokenize_records
from lightning_dpo.data.tokens.tokenizer_loading import load_tokenizer
from lightning_dpo.pairs import TokenizedPair

__all__ = [
    "BatchSettings",
    "DataSource",
    "DataValidationError",
    "FormatOptions",
    "PreferenceDataModule",
    "PreferenceRecord",
    "RecordSettings",
    "RewardDefaults",
    "SkipReport",
    "SplitStats",
    "TokenSettings",
    "TokenizedPair",
    "WindowedDataLoader",
    "build_byte_tokenizer",
    "build_char_tokenizer",
    "collate_pairs",
    "generate_sort_splits",
    "generate_sort_task",
    "load_records",
    "load_tokenizer",
    "read_jsonl",
    "read_rows",
    "split_by_prompt",
    "tokenize_record",
    "tokenize_records",
]
