"""Benchmark: training throughput (pairs/s) per reference strategy, ratio to a reference-free loop.

Run: ``python bench/bench_throughput.py [--sizes 1M,10M] [--rounds 3] [--steps 3] [--quick]``.

For each model size, every configuration of ``_training.py`` (swap in copy and exchange
mode, a resident reference copy, LoRA with the adapters disabled, the reference log-prob
cache when the package has one, and the reference-free ceiling) gets its own module and
callbacks, all built up front. Then, ``--rounds`` times, each configuration runs a
Lightning ``fit`` of ``--steps + 2`` steps, in an order that rotates every round, so
load from other processes falls on all of them alike. A step is the wall time between
consecutive training-batch starts (reference, policy forward, backward, optimizer step,
data); the first step of each fit (optimizer state allocation) is not counted.

Reported: pairs/s from the median step time, the ratio to the reference-free ceiling
(1.00 = the reference costs nothing; the ceiling trains all parameters, so LoRA, whose
step computes no base-weight gradients and updates few parameters, can exceed it), the
reference's cost per step in ms (median step minus the ceiling's), and the one-off time
from fit start to the first step of the first fit (snapshot, deep copy or the cache's
pass over the data).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _models import (
    machine_info,
    markdown_table,
    median,
)
from _training import (
    CACHE,
    CONFIGURATIONS,
    NOT_AVAILABLE,
    REFERENCE_FREE,
    StepTimer,
    build_datamodule,
    build_module,
    build_trainer,
    cache_parameter,
    parse_round_arguments,
    quiet,
    reference_callback,
)


def run_rounds(size: str, args: argparse.Namespace, directory: Path) -> dict[str, StepTimer]:
    """Build every configuration at ``size``, run the interleaved rounds, return the timers."""
    names = [name for name in CONFIGURATIONS if name != CACHE or cache_parameter() is not None]
    pairs = max(64, args.batch_size * (args.steps + 2))
    datamodule = build_datamodule(directory, pairs, args.batch_size, args.length)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    runs = {
        name: (build_module(name, size), StepTimer(), reference_callback(name, directory / "cache"))
        for name in names
    }
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            module, timer, callback = runs[name]
            trainer = build_trainer(args.steps + 2, [timer, callback], accelerator)
            trainer.fit(module, datamodule=datamodule)
    return {name: timer for name, (_, timer, _) in runs.items()}


def size_rows(size: str, timers: dict[str, StepTimer], batch_size: int) -> list[list[str]]:
    """Rows of one size: pairs/s, ratio to the ceiling, ms of reference per step, set-up."""
    ceiling = median(timers[REFERENCE_FREE].intervals)
    rows = []
    for name in CONFIGURATIONS:
        if name not in timers:
            rows.append([size, name, NOT_AVAILABLE, "", "", ""])
            continue
        step = median(timers[name].intervals)
        rows.append(
            [
                size,
                name,
                f"{batch_size / step:.2f}",
                f"{ceiling / step:.2f}",
                f"{(step - ceiling) * 1e3:.1f}",
                f"{timers[name].fit_start_seconds[0]:.2f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args, sizes = parse_round_arguments(parser, 4, "pairs per batch", argv)
    quiet()
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows += size_rows(size, run_rounds(size, args, Path(tmp)), args.batch_size)
    print("# Training throughput per reference strategy, ratio to a reference-free loop\n")
    print(f"Machine: {machine_info()}")
    print(
        f"{args.rounds} rounds x {args.steps} timed steps per configuration and size; "
        f"{args.batch_size} pairs x {args.length} tokens per step; DPO, AdamW, fp32\n"
    )
    headers = [
        "model",
        "configuration",
        "pairs/s (median step)",
        "x reference-free",
        "reference ms/step",
        "fit start to first step (s)",
    ]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
