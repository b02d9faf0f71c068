"""Benchmark: batch layouts on real preference data: token positions and training pairs/s.

Run: ``python bench/bench_layouts.py --data ../shared/data/hh_harmless_dev.jsonl.gz
[--sizes 10M,50M] [--modes full,lora] [--rounds 2] [--steps 3] [--batch-size 8]
[--max-tokens N] [--quick]``.

The data's own text trains a byte-level BPE of the model's vocabulary (8,192 tokens) in
this process; the file goes through :class:`~lightning_dpo.PreferenceDataModule`
(``max_length=512``, the training split).

1. **Positions.** Over one epoch of training batches, for each layout and batching: token
   positions the forward computes (rows x width, padding included) per unique token (each
   pair's prompt once plus both responses; 1.00 is the physical limit), and the attention
   scores computed (rows x width^2) as a fraction of the padded layout's.
2. **Throughput.** For each model size and mode (full fine-tuning with the host-snapshot
   reference, LoRA with the adapters disabled), each configuration gets its own module and
   Lightning ``fit``; ``--rounds`` times each runs ``--steps + 2`` steps, in an order that
   rotates every round. A step is the wall time between training-batch starts (reference
   forward, policy forward and backward, optimizer step, data); the first two steps of each
   fit are not counted. Reported: pairs/s (pairs over the timed steps / their time) and the
   ratio to ``padded, model logits``, the path before the layouts and the response-only
   head existed. Before timing, each configuration's step-0 loss is checked to be ln 2.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from _models import (
    add_threads_argument,
    build_llama,
    machine_info,
    markdown_table,
    parse_sizes,
    set_threads,
)
from _text import record_texts, train_bpe
from _training import build_trainer, quiet
from lightning.pytorch.callbacks import Callback

from lightning_dpo import PreferenceDataModule, PreferenceLoss, PreferenceModule
from lightning_dpo.batch import SCORE_LENGTHS_KEY
from lightning_dpo.data.settings import BatchSettings, DataSource, TokenSettings
from lightning_dpo.layouts.rows import pair_tokens
from lightning_dpo.policy import add_lora
from lightning_dpo.reference import ReferenceSwapCallback

MAX_LENGTH = 512
LAYOUT_NAMES = ("padded", "prefix_shared", "packed")


@dataclass(frozen=True)
class Configuration:
    """One way to lay out and score the batches."""

    name: str
    layout: str
    budget: bool = False
    response_head: bool = True


CONFIGURATIONS = (
    Configuration("padded, model logits (before)", "padded", response_head=False),
    Configuration("padded", "padded"),
    Configuration("prefix_shared", "prefix_shared"),
    Configuration("packed", "packed"),
    Configuration("packed, token budget", "packed", budget=True),
)
BASELINE = CONFIGURATIONS[0].name


def datamodule(args: argparse.Namespace, tokenizer: Any, layout: str, budget: bool) -> Any:
    """The data module over ``--data`` in ``layout`` (token-budget batches if ``budget``)."""
    data = PreferenceDataModule(
        tokenizer=tokenizer,
        source=DataSource(train_file=args.data),
        tokens=TokenSettings(max_length=MAX_LENGTH),
        batches=BatchSettings(
            batch_size=args.batch_size,
            layout=layout,
            max_tokens=args.max_tokens if budget else None,
        ),
    )
    data.setup()
    return data


def positions_rows(args: argparse.Namespace, tokenizer: Any) -> list[list[str]]:
    """Positions per unique token and attention share, per layout and batching, one epoch."""
    rows, padded_scores = [], {}
    for budget in (False, True):
        batching = f"{args.max_tokens} tokens" if budget else f"{args.batch_size} pairs"
        for layout in LAYOUT_NAMES:
            data = datamodule(args, tokenizer, layout, budget)
            unique = sum(pair_tokens(pair) for pair in data.train_pairs)
            positions = scores = batches = 0
            for batch in data.train_dataloader():
                rows_, width = batch["input_ids"].shape
                positions, scores = positions + rows_ * width, scores + rows_ * width**2
                batches += 1
            padded_scores.setdefault(budget, scores)
            rows.append(
                [
                    layout,
                    batching,
                    str(batches),
                    f"{positions / unique:.3f}",
                    f"{scores / padded_scores[budget]:.2f}",
                ]
            )
    return rows


class PairRate(Callback):
    """Pairs and wall time of each training step after the first two of a fit."""

    def __init__(self) -> None:
        self.pairs = 0
        self.seconds = 0.0
        self._last: float | None = None
        self._pending = 0
        self._seen = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start this fit's clock afresh."""
        self._last, self._seen = None, 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Count the step that just ended (from the third on), then start the next."""
        now = time.perf_counter()
        if self._last is not None and self._seen >= 2:
            self.pairs, self.seconds = self.pairs + self._pending, self.seconds + now - self._last
        self._last, self._seen = now, self._seen + 1
        self._pending = batch[SCORE_LENGTHS_KEY].shape[0] // 2

    @property
    def rate(self) -> float:
        """Pairs per second over the counted steps."""
        return self.pairs / self.seconds if self.seconds else math.nan


class FirstLoss(Callback):
    """The loss of the first training step of the first fit."""

    def __init__(self) -> None:
        self.loss: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        if self.loss is None:  # one micro-batch per step: the mean over its pairs
            self.loss = float(outputs["loss"])


@dataclass
class Run:
    """One configuration's data, module and callbacks at one size and mode."""

    configuration: Configuration
    data: Any
    module: PreferenceModule
    rate: PairRate = field(default_factory=PairRate)
    first: FirstLoss = field(default_factory=FirstLoss)
    reference: Callback = field(default_factory=ReferenceSwapCallback)


def build_run(configuration: Configuration, args, tokenizer, size: str, mode: str) -> Run:
    """The module (same initial weights for every configuration) and data of a configuration."""
    policy = build_llama(size, max_positions=MAX_LENGTH, vocab_size=len(tokenizer))
    if mode == "lora":
        policy = add_lora(policy, r=8, lora_alpha=16)
    module = PreferenceModule(
        policy,
        PreferenceLoss("dpo", beta=0.1),
        partial(torch.optim.AdamW, lr=1e-5),
        response_head=configuration.response_head,
    )
    data = datamodule(args, tokenizer, configuration.layout, configuration.budget)
    return Run(configuration, data, module)


def throughput_rows(args, tokenizer, size: str, mode: str) -> list[list[str]]:
    """Interleaved rounds of every configuration at ``size`` in ``mode``; one row each."""
    runs = [build_run(c, args, tokenizer, size, mode) for c in CONFIGURATIONS]
    for round_index in range(args.rounds):
        shift = round_index % len(runs)
        for run in runs[shift:] + runs[:shift]:
            trainer = build_trainer(args.steps + 2, [run.rate, run.first, run.reference], "cpu")
            trainer.fit(run.module, datamodule=run.data)
    baseline = next(run.rate.rate for run in runs if run.configuration.name == BASELINE)
    rows = []
    for run in runs:
        if run.first.loss is None or abs(run.first.loss - math.log(2)) > 1e-4:
            raise AssertionError(f"{run.configuration.name}: step-0 loss {run.first.loss}")
        rows.append(
            [
                size,
                mode,
                run.configuration.name,
                f"{run.rate.rate:.2f}",
                f"{run.rate.rate / baseline:.2f}",
                str(run.rate.pairs),
            ]
        )
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preference data file (jsonl.gz, ...)")
    parser.add_argument("--sizes", default="10M,50M", help="comma-separated model sizes")
    parser.add_argument("--modes", default="full,lora", help="full and/or lora")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per fit")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="token budget (default: 8 mean pairs)"
    )
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 round (smoke)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.quick:
        args.rounds, args.steps, args.sizes, args.modes = 1, 1, "tiny", "full"
    args.sizes = parse_sizes(args.sizes)
    args.modes = [mode.strip() for mode in args.modes.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse, build the tokenizer, print both tables."""
    args = parse(argv)
    quiet()
    vocab = 300 if args.quick else 8192
    tokenizer = train_bpe(record_texts(args.data), vocab)
    if args.max_tokens is None:
        pairs = datamodule(args, tokenizer, "padded", False).train_pairs
        args.max_tokens = args.batch_size * round(sum(map(pair_tokens, pairs)) / len(pairs))
    print("# Batch layouts on real preference data\n")
    print(f"Machine: {machine_info()}")
    print(f"Data: {args.data}, BPE of {vocab} tokens trained on it, max_length={MAX_LENGTH}\n")
    headers = ["layout", "batches of", "batches", "positions / unique token", "x padded attention"]
    print(markdown_table(headers, positions_rows(args, tokenizer)) + "\n")
    rows = [
        row
        for size in args.sizes
        for mode in args.modes
        for row in throughput_rows(args, tokenizer, size, mode)
    ]
    print(
        f"{args.rounds} rounds x {args.steps} timed steps; {args.batch_size} pairs per batch "
        f"or {args.max_tokens} tokens; DPO, AdamW, fp32; step-0 loss ln 2 checked\n"
    )
    headers = ["model", "mode", "configuration", "pairs/s", "x before", "pairs timed"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
