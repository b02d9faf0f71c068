"""The stages the data module runs in ``setup``: records, then tokens, per split, reported."""

from __future__ import annotations

from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.reading import load_records
from lightning_dpo.data.records.record import DataValidationError, PreferenceRecord
from lightning_dpo.data.records.sort_task import generate_sort_splits
from lightning_dpo.data.records.splits import split_by_prompt
from lightning_dpo.data.records.validation import SkipReport, apply_policy
from lightning_dpo.data.report import SplitStats, split_stats
from lightning_dpo.data.settings import DataSource, RecordSettings, TokenSettings
from lightning_dpo.data.tokens.cache import cached_encodings
from lightning_dpo.data.tokens.tokenization import build_pairs
from lightning_dpo.pairs import TokenizedPair

Records = list[PreferenceRecord]


def read_source(
    location: str, split: str, tokenizer: PreTrainedTokenizerBase, records: RecordSettings
) -> tuple[Records, SkipReport]:
    """Read and validate one source."""
    options, rewards = records.format_options(), records.rewards()
    return load_records(location, tokenizer, options, rewards, records.on_invalid, split)


def read_splits(
    source: DataSource, records: RecordSettings, tokenizer: PreTrainedTokenizerBase, seed: int
) -> tuple[Records, Records, dict[str, SkipReport]]:
    """The train and validation records (read or generated, validated), and each split's report.

    Without ``train_file`` the embedded sort task; without ``val_file`` a seeded share of
    the training file's distinct prompts is held out (both splits then share one report).
    """
    if source.train_file is None:
        train, val = generate_sort_splits(source.num_train, source.num_val, seed, with_rewards=True)
        reports = {
            split: SkipReport(split_records[0].source, total=len(split_records))
            for split, split_records in (("train", train), ("val", val))
        }
        return train, val, reports
    train, report = read_source(source.train_file, source.train_split, tokenizer, records)
    if source.val_file is None:
        train, val = split_by_prompt(train, source.val_fraction, seed)
        return train, val, {"train": report, "val": report}
    val, val_report = read_source(source.val_file, source.val_split, tokenizer, records)
    return train, val, {"train": report, "val": val_report}


def tokenize_split(
    records: Records,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    settings: TokenSettings,
    on_invalid: str,
    report: SkipReport,
) -> tuple[list[TokenizedPair], SplitStats]:
    """Encode (once, cached) and cut ``records``; refuse or skip those that cannot fit.

    Returns:
        The pairs, each with its index in the split, and the split's statistics.

    Raises:
        DataValidationError: A record that cannot fit (``on_invalid="error"``), or no pair.
    """
    encodings, _ = cached_encodings(records, tokenizer, settings.cache_dir)
    limits = settings.max_length, settings.max_prompt_length
    built = build_pairs(records, encodings, tokenizer, *limits)
    apply_policy(built.problems, on_invalid, report)
    if not built.pairs:
        raise DataValidationError(f"{report.source}: expected at least one valid {split} pair")
    stats = split_stats(split, records, encodings, built, tokenizer, limits)
    return [replace(pair, index=i) for i, pair in enumerate(built.pairs)], stats
