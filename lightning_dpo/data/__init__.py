"""Preference data: records, the embedded sort task, tokenisation, batching, data module."""

from lightning_dpo.data.char_tokenizer import build_char_tokenizer
from lightning_dpo.data.collate import collate_pairs
from lightning_dpo.data.datamodule import PreferenceDataModule
from lightning_dpo.data.jsonl import read_jsonl
from lightning_dpo.data.records import DataValidationError, PreferenceRecord
from lightning_dpo.data.sort_task import generate_sort_splits, generate_sort_task
from lightning_dpo.data.splits import split_by_prompt
from lightning_dpo.data.tokenization import TokenizedPair, tokenize_record, tokenize_records
from lightning_dpo.data.tokenizer_loading import load_tokenizer

__all__ = [
    "DataValidationError",
    "PreferenceDataModule",
    "PreferenceRecord",
    "TokenizedPair",
    "build_char_tokenizer",
    "collate_pairs",
    "generate_sort_splits",
    "generate_sort_task",
    "load_tokenizer",
    "read_jsonl",
    "split_by_prompt",
    "tokenize_record",
    "tokenize_records",
]
