"""Preference data: records, the embedded sort task, tokenisation, batching, data module."""

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
from lightning_dpo.data.tokens.byte_tokenizer import build_byte_tokenizer
from lightning_dpo.data.tokens.char_tokenizer import build_char_tokenizer
from lightning_dpo.data.tokens.tokenization import tokenize_record, tokenize_records
from lightning_dpo.data.tokens.tokenizer_loading import load_tokenizer
from lightning_dpo.pairs import TokenizedPair

__all__ = [
    "DataValidationError",
    "FormatOptions",
    "PreferenceDataModule",
    "PreferenceRecord",
    "RewardDefaults",
    "SkipReport",
    "SplitStats",
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
