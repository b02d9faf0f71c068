"""From the data module's settings to validated, tokenised splits, and what was done to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.formats import FormatOptions
from lightning_dpo.data.records.reading import RewardDefaults, load_records
from lightning_dpo.data.records.record import DataValidationError, PreferenceRecord
from lightning_dpo.data.records.sort_task import generate_sort_splits
from lightning_dpo.data.records.splits import split_by_prompt
from lightning_dpo.data.records.validation import SkipReport, apply_policy
from lightning_dpo.data.report import SplitStats, split_stats
from lightning_dpo.data.tokens.cache import cached_encodings
from lightning_dpo.data.tokens.tokenization import build_pairs
from lightning_dpo.pairs import TokenizedPair

Records = list[PreferenceRecord]


def read_source(
    hp: Mapping[str, Any],
    location: str,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    options: FormatOptions,
) -> tuple[Records, SkipReport]:
    """Read and validate one source (``hp``: the data module's settings)."""
    rewards = RewardDefaults(hp["default_chosen_reward"], hp["default_rejected_reward"])
    return load_records(location, tokenizer, options, rewards, hp["on_invalid"], split)


def read_splits(
    hp: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, options: FormatOptions
) -> tuple[Records, Records, dict[str, SkipReport]]:
    """The train and validation records (read or generated, validated), and each split's report.

    Without ``train_file`` the embedded sort task; without ``val_file`` a seeded share of
    the training file's distinct prompts is held out (both splits then share one report).
    """
    if hp["train_file"] is None:
        train, val = generate_sort_splits(
            hp["num_train"], hp["num_val"], hp["seed"], with_rewards=True
        )
        reports = {
            split: SkipReport(records[0].source, total=len(records))
            for split, records in (("train", train), ("val", val))
        }
        return train, val, reports
    train, report = read_source(hp, hp["train_file"], hp["train_split"], tokenizer, options)
    if hp["val_file"] is None:
        train, val = split_by_prompt(train, hp["val_fraction"], hp["seed"])
        return train, val, {"train": report, "val": report}
    val, val_report = read_source(hp, hp["val_file"], hp["val_split"], tokenizer, options)
    return train, val, {"train": report, "val": val_report}


def tokenize_split(
    records: Records,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    hp: Mapping[str, Any],
    report: SkipReport,
) -> tuple[list[TokenizedPair], SplitStats]:
    """Encode (once, cached) and cut ``records``; refuse or skip those that cannot fit.

    Returns:
        The pairs, each with its index in the split, and the split's statistics.

    Raises:
        DataValidationError: A record that cannot fit (``on_invalid="error"``), or no pair.
    """
    encodings, _ = cached_encodings(records, tokenizer, hp["cache_dir"])
    limits = hp["max_length"], hp["max_prompt_length"]
    built = build_pairs(records, encodings, tokenizer, *limits)
    apply_policy(built.problems, hp["on_invalid"], report)
    if not built.pairs:
        raise DataValidationError(f"{report.source}: expected at least one valid {split} pair")
    stats = split_stats(split, records, encodings, built, tokenizer, limits)
    return [replace(pair, index=i) for i, pair in enumerate(built.pairs)], stats
