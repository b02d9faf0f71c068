"""The data report: what each source kept and refused, and what tokenisation did per split."""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lightning.fabric.utilities.rank_zero import rank_zero_only
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.record import PreferenceRecord, format_location
from lightning_dpo.data.records.validation import SkipReport
from lightning_dpo.data.tokens.tokenization import BuiltPairs, Encoding

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # printed instead when logging is not set up
_FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class SplitStats:
    """What tokenisation did to the records one split kept.

    Attributes:
        split: ``"train"`` or ``"val"``.
        source: Where the split's records came from.
        pairs: Pairs kept.
        empty_responses: Pairs with an empty (or whitespace-only) response, trained as EOS.
        prompts_cut: Pairs whose prompt was cut from its start (its end kept).
        responses_cut: Responses (two per pair) cut at their end, EOS included.
        unk_tokens: Unknown-token ids in the kept records' full encodings.
        unk_records: Kept records with at least one unknown token.
        first_unk: Where the first one is, ``"file:line, field 'chosen'"``, or ``None``.
        unk_token: The tokenizer's unknown token (``None`` when it has none).
        median_prompt: Median prompt tokens before cutting (BOS included, where added).
        median_response: Median response tokens before cutting (EOS or end-of-turn
            included).
        max_length: The limit on prompt + response.
        max_prompt_length: The fixed cap on the prompt, or ``None`` (cut as needed).
    """

    split: str
    source: str
    pairs: int
    empty_responses: int
    prompts_cut: int
    responses_cut: int
    unk_tokens: int
    unk_records: int
    first_unk: str | None
    unk_token: str | None
    median_prompt: float
    median_response: float
    max_length: int
    max_prompt_length: int | None
    example: tuple[str, str] | None = None

    def summary(self) -> str:
        """One line: pairs, empty responses, what the limits cut, median lengths."""
        return (
            f"data {self.split}: {self.pairs} pairs from {self.source}; "
            f"{self.empty_responses} with an empty response; max_length={self.max_length} "
            f"({self._prompt_rule()}) cut {self.prompts_cut} prompts (their start) "
            f"and {self.responses_cut} of {2 * self.pairs} responses (their end); median "
            f"{self.median_prompt:g} prompt and {self.median_response:g} response tokens"
        )

    def _prompt_rule(self) -> str:
        if self.max_prompt_length is not None:
            return f"prompt <= {self.max_prompt_length}"
        return f"prompts cut as far as needed, to >= {self.max_length // 2}"

    def example_line(self) -> str | None:
        """The split's first pair as the model sees it: the prompt's end, the chosen's start."""
        if self.example is None:
            return None
        tail, head = self.example
        return (
            f"data {self.split}, first pair as the model sees it (decoded ids): prompt "
            f"...{tail!r} | chosen {head!r}..."
        )

    def unk_warning(self) -> str | None:
        """The warning about text the tokenizer cannot represent, or ``None`` if there is none."""
        if not self.unk_tokens:
            return None
        return (
            f"data {self.split}: the tokenizer turned text into {self.unk_tokens} "
            f"{self.unk_token} tokens in {self.unk_records} of {self.pairs} records (first at "
            f"{self.first_unk}); that text is lost to training: use a tokenizer that covers "
            "it (data.tokenizer=<directory>, or null for the byte-level default)"
        )


def _count_unk(
    records: Sequence[PreferenceRecord], encodings: Sequence[Encoding], unk: int
) -> tuple[int, int, str | None]:
    """``(unk tokens, records with one, location of the first)`` over the given records."""
    tokens, with_unk, first = 0, 0, None
    for record, encoding in zip(records, encodings, strict=True):
        counts = [ids.count(unk) for ids in encoding]
        if any(counts):
            tokens, with_unk = tokens + sum(counts), with_unk + 1
            if first is None:
                field = _FIELDS[next(i for i, n in enumerate(counts) if n)]
                where = format_location(record.source, record.line, record.index)
                first = f"{where}, field '{field}'"
    return tokens, with_unk, first


def _unknown_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id of text the tokenizer lost, or ``None`` (none, or one id with EOS or BOS)."""
    unk = tokenizer.unk_token_id
    if unk in (tokenizer.eos_token_id, tokenizer.bos_token_id):  # GPT-2's: one id for all
        return None  # an added EOS or BOS is not lost text
    return unk


def split_stats(
    split: str,
    records: Sequence[PreferenceRecord],
    encodings: Sequence[Encoding],
    built: BuiltPairs,
    tokenizer: PreTrainedTokenizerBase,
    limits: tuple[int, int | None],
) -> SplitStats:
    """Counts what tokenisation did to the kept records of one split.

    Args:
        split: ``"train"`` or ``"val"``.
        records: The split's records, as given to :func:`build_pairs`.
        encodings: Their untruncated encodings.
        built: What :func:`build_pairs` made of them.
        tokenizer: The tokenizer (for its unknown token).
        limits: ``(max_length, max_prompt_length)`` as configured.

    Returns:
        The split's statistics.
    """
    kept_records = [records[i] for i in built.kept]
    kept = [encodings[i] for i in built.kept]
    unk = _unknown_token_id(tokenizer)
    unk_counts = (0, 0, None) if unk is None else _count_unk(kept_records, kept, unk)
    cut = list(zip(built.pairs, kept, strict=True))
    return SplitStats(
        split=split,
        source=kept_records[0].source if kept_records else "<none>",
        pairs=len(built.pairs),
        empty_responses=sum(r.has_empty_response for r in kept_records),
        prompts_cut=sum(len(p.prompt_ids) < len(e[0]) for p, e in cut),
        responses_cut=sum(
            (len(p.chosen_ids) < len(e[1])) + (len(p.rejected_ids) < len(e[2])) for p, e in cut
        ),
        unk_tokens=unk_counts[0],
        unk_records=unk_counts[1],
        first_unk=unk_counts[2],
        unk_token=tokenizer.unk_token if unk is not None else None,
        median_prompt=statistics.median(len(e[0]) for e in kept) if kept else 0,
        median_response=statistics.median([len(r) for e in kept for r in e[1:]]) if kept else 0,
        max_length=limits[0],
        max_prompt_length=limits[1],
        example=_example(built, tokenizer),
    )


EXAMPLE_CHARS = 80
"""Characters of the prompt's end and the chosen response's start shown in the report."""


def _example(built: BuiltPairs, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str] | None:
    """The first pair's prompt end and chosen start, decoded with their special tokens."""
    if not built.pairs:
        return None
    pair = built.pairs[0]
    prompt = tokenizer.decode(pair.prompt_ids, skip_special_tokens=False)
    chosen = tokenizer.decode(pair.chosen_ids, skip_special_tokens=False)
    return prompt[-EXAMPLE_CHARS:], chosen[:EXAMPLE_CHARS]


def _shown_on_console(logger: logging.Logger, level: int) -> bool:
    """Whether logging ``level`` on ``logger`` already writes to stdout or stderr."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            stream = getattr(handler, "stream", None)
            if stream in (sys.stdout, sys.stderr) and level >= handler.level:
                return True
        current = current.parent if current.propagate else None
    return False


@rank_zero_only
def _emit(message: str, level: int) -> None:
    """Logs ``message`` at ``level`` and prints it unless the log is already on the console.

    Under ``train.py`` (Hydra's console handler) each line thus shows once, with the log's
    timestamp; in a notebook or a script without logging set up, it is printed. Global
    rank zero only.
    """
    if not _shown_on_console(log, level):
        print(message)
    log.log(level, message)


def announce(reports: Mapping[str, SkipReport], stats: Sequence[SplitStats]) -> None:
    """Prints and logs the data report (once, on global rank zero).

    One line per source and the splits it feeds (records read, kept, refused per reason,
    the format and whether the chat template rendered it: a warning when any was refused),
    one per split (:meth:`SplitStats.summary`), the first split's first pair as the model
    sees it (:meth:`SplitStats.example_line`), and a warning per split whose text the
    tokenizer maps to its unknown token.

    Args:
        reports: The source report of each split (one report may feed both splits).
        stats: One per split.
    """
    splits: dict[int, list[str]] = {}
    for split, report in reports.items():
        splits.setdefault(id(report), []).append(split)
    for report in {id(r): r for r in reports.values()}.values():
        line = f"data {report.source} ({', '.join(splits[id(report)])}): {report.counts()}"
        _emit(line, logging.WARNING if report.skipped else logging.INFO)
    for index, split in enumerate(stats):
        _emit(split.summary(), logging.INFO)
        example = split.example_line()
        if index == 0 and example is not None:  # one pair shown, from the first split
            _emit(example, logging.INFO)
        warning = split.unk_warning()
        if warning is not None:
            _emit(warning, logging.WARNING)
