"""Benchmark: reference swaps under gradient accumulation, per micro-batch vs per optimizer step.

Run: ``python bench/bench_accumulation.py [--sizes 1M,10M] [--accumulate 4] [--rounds 3]
[--steps 3] [--quick]``.

With ``Trainer(accumulate_grad_batches=k)`` an optimizer step consumes ``k`` micro-batches.
:class:`~lightning_dpo.ReferenceSwapCallback` (snapshot mode) brackets each reference
forward: swap the reference weights in, forward under ``no_grad``, swap the training
weights back. ``BatchSettings(step_windows=True)`` (the default) collates each step's
micro-batches together, so the callback runs the ``k`` reference forwards of a step
inside **one** bracket, at its first micro-batch; ``step_windows=False`` gives one
bracket per micro-batch. Configurations, at each model size:

* ``swap (copy)`` and ``swap (exchange)`` (``swap_mode``), each **per micro-batch**
  (``step_windows=False``: ``k`` brackets per step) and **per optimizer step**
  (``step_windows=True``: one bracket per step);
* ``reference-free``: zeros as reference log-probs, no reference forward: the ceiling.

Each gets its own module and callbacks, all built up front. Then, ``--rounds`` times, each
runs a Lightning ``fit`` of ``--steps + 1`` optimizer steps, in an order that rotates every
round, so load from other processes falls on all of them alike. A step is the wall time
between the ends of consecutive optimizer steps (the training-batch end at which
``trainer.global_step`` advanced): data, the reference forwards, the policy forwards and
backwards of all ``k`` micro-batches, and the optimizer step. Timing micro-batch starts
would be wrong here: with windows, the first micro-batch of a step does all ``k``
reference forwards. The first step of each fit (optimizer state allocation) is not
counted; the figures are medians over all timed steps of all rounds.

Checked before the table is printed (the run stops otherwise): every configuration ran
the brackets it should (counted by the swap source itself: ``k`` per optimizer step per micro-batch,
1 per optimizer step); the reference log-probs of the first two optimizer steps, recorded
by a callback placed after the reference's, are bitwise equal, on the same input ids, in
every swap configuration (windowed or not, the same numbers are computed); and in the
second step, after an optimizer update, they are bitwise those of the initial weights
(a fresh module), which the trained policy's are not. (The first step alone could not
tell a skipped swap: before the first update the live weights are the reference.)

Reported: brackets per optimizer step, median step time, pairs/s (``k`` x batch size per
step), the ratio to the reference-free ceiling, the speed-up over the per-micro-batch run
of the same swap mode (its median step time over this one's) and the reference's cost per
step in ms (median step minus the ceiling's). That difference of two whole-step medians
is noisy, so the reference callback's hook is also timed directly, by callbacks placed
just before and after it: its time summed over a step's micro-batches (the swaps and the
``k`` reference forwards, none of the policy's work), median over steps, and the same
speed-up computed from it. On CPU, ``exchange`` swaps tensor storages, so a bracket is
nearly free and windows save little; ``copy`` moves the trainable bytes three times per
bracket, as every swap does on a GPU. The reference forwards themselves (``k`` per step
either way) are not saved by windows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from _models import (
    machine_info,
    markdown_table,
    median,
    synchronize,
)
from _training import (
    REFERENCE_FREE,
    SWAP_COPY,
    SWAP_EXCHANGE,
    OptimizerStepTimer,
    build_datamodule,
    build_module,
    build_trainer,
    parse_round_arguments,
    quiet,
    reference_callback,
)
from lightning.pytorch.callbacks import Callback

from lightning_dpo import PreferenceDataModule, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.reference import reference_context
from lightning_dpo.reference.sources import SwapSource

PER_MICRO_BATCH = "per micro-batch"
PER_STEP = "per optimizer step"
NOT_ON_CUDA = "not measured: exchange needs host parameters"
RECORDED_STEPS = 2
"""Optimizer steps whose reference log-probs are compared (the second one after an update)."""


@dataclass(frozen=True)
class Configuration:
    """One row: how the reference log-probs are computed and how the batches come.

    Attributes:
        name: The row's label.
        reference: The ``_training`` configuration of the reference callback.
        windows: ``PreferenceDataModule(batches=BatchSettings(step_windows=...)``.
    """

    name: str
    reference: str
    windows: bool

    def expected_brackets(self, accumulate: int) -> int:
        """Reference brackets per optimizer step this configuration must run."""
        if self.reference == REFERENCE_FREE:
            return 0
        return 1 if self.windows else accumulate


CONFIGURATIONS = (
    Configuration(f"{SWAP_COPY}, {PER_MICRO_BATCH}", SWAP_COPY, False),
    Configuration(f"{SWAP_COPY}, {PER_STEP}", SWAP_COPY, True),
    Configuration(f"{SWAP_EXCHANGE}, {PER_MICRO_BATCH}", SWAP_EXCHANGE, False),
    Configuration(f"{SWAP_EXCHANGE}, {PER_STEP}", SWAP_EXCHANGE, True),
    Configuration(REFERENCE_FREE, REFERENCE_FREE, False),
)


class ReferenceStart(Callback):
    """Notes when the reference callback's ``on_train_batch_start`` begins (put it just before)."""

    def __init__(self) -> None:
        self.time = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock of this batch's reference hook."""
        synchronize(pl_module.device)
        self.time = time.perf_counter()


class ReferenceProbe(Callback):
    """Put just after the reference callback: times its hook and records the first batches.

    ``hook_seconds`` gets, per optimizer step, the time spent in the reference callback's
    ``on_train_batch_start`` over all the step's micro-batches (the swaps and reference
    forwards, without the policy's work); the first step of each fit is not counted, as
    in :class:`~_training.OptimizerStepTimer`. ``batches`` keeps host copies of the
    first ``micro_batches`` training batches of the first fit, reference log-probs
    included.
    """

    def __init__(self, start: ReferenceStart, micro_batches: int) -> None:
        self.start = start
        self.micro_batches = micro_batches
        self.batches: list[dict[str, torch.Tensor]] = []
        self.hook_seconds: list[float] = []
        self._step, self._counted, self._current = 0, False, 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The first step of the fit is not counted."""
        self._step, self._counted, self._current = trainer.global_step, False, 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Add the reference hook's time to the step's; keep the batch if among the first."""
        synchronize(pl_module.device)
        self._current += time.perf_counter() - self.start.time
        if len(self.batches) < self.micro_batches:
            tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
            self.batches.append({k: v.detach().cpu().clone() for k, v in tensors.items()})

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """At the end of an optimizer step, file its reference time."""
        if trainer.global_step == self._step:
            return
        if self._counted:
            self.hook_seconds.append(self._current)
        self._step, self._counted, self._current = trainer.global_step, True, 0.0


@dataclass
class Run:
    """One configuration's module, data, callbacks and optimizer steps taken so far."""

    configuration: Configuration
    module: PreferenceModule
    datamodule: PreferenceDataModule
    timer: OptimizerStepTimer
    start: ReferenceStart
    reference: Callback
    probe: ReferenceProbe
    optimizer_steps: int = 0

    @property
    def brackets(self) -> int:
        """Reference brackets run in all fits (0 without a ``ReferenceSwapCallback``)."""
        if not isinstance(self.reference, ReferenceSwapCallback):
            return 0
        source = self.reference.source
        return source.brackets if isinstance(source, SwapSource) else 0


def measured(configuration: Configuration, accelerator: str) -> bool:
    """Whether ``configuration`` can run here (``exchange`` needs host parameters)."""
    return not (accelerator == "gpu" and configuration.reference == SWAP_EXCHANGE)


def run_rounds(size: str, args: argparse.Namespace, directory: Path) -> dict[str, Run]:
    """Build every configuration at ``size``, run the interleaved rounds, return the runs."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    pairs = max(64, 2 * args.batch_size * args.accumulate * (args.steps + 1))
    datamodules = {}
    for windows in (False, True):
        folder = directory / ("windows" if windows else "micro-batches")
        folder.mkdir()
        datamodules[windows] = build_datamodule(
            folder, pairs, args.batch_size, args.length, step_windows=windows
        )
    runs = {}
    for configuration in CONFIGURATIONS:
        if not measured(configuration, accelerator):
            continue
        start = ReferenceStart()
        runs[configuration.name] = Run(
            configuration,
            build_module(configuration.reference, size),
            datamodules[configuration.windows],
            OptimizerStepTimer(),
            start,
            reference_callback(configuration.reference, None),
            ReferenceProbe(start, RECORDED_STEPS * args.accumulate),
        )
    names = list(runs)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            trainer = build_trainer(
                args.steps + 1,
                [run.timer, run.start, run.reference, run.probe],
                accelerator,
                accumulate_grad_batches=args.accumulate,
            )
            trainer.fit(run.module, datamodule=run.datamodule)
            run.optimizer_steps += trainer.global_step
    return runs


def check_brackets(size: str, runs: dict[str, Run], accumulate: int) -> None:
    """Check every configuration ran the reference brackets it should.

    Raises:
        RuntimeError: A configuration ran another number of brackets per optimizer step.
    """
    for name, run in runs.items():
        expected = run.configuration.expected_brackets(accumulate) * run.optimizer_steps
        if run.brackets != expected:
            raise RuntimeError(
                f"{size} {name}: {run.brackets} reference brackets in {run.optimizer_steps} "
                f"optimizer steps, expected {expected}: the benchmark measures the wrong thing"
            )


def logps(module: PreferenceModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[2B]`` host log-probs of a host ``batch`` under ``module``'s live weights.

    Computed on the device the benchmark trains on (no grad, eval mode), as the reference
    forward inside the fit was, so that the two can be compared bit for bit.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device)
    batch = {key: value.to(device) for key, value in batch.items()}
    with reference_context(None, module.policy):
        return module.sequence_logps(batch).sums.cpu()


def check_reference_logps(size: str, runs: dict[str, Run], accumulate: int) -> int:
    """Check the swap runs computed the same reference log-probs, and the right ones.

    The first :data:`RECORDED_STEPS` optimizer steps of every swap configuration must have
    the same input ids and bitwise-equal reference log-probs, windowed or not. The
    second step comes after an optimizer update, so there the live policy is not the
    reference: its log-probs must equal those of a fresh module with the initial weights
    (a reference forward that skipped the swap would give the updated policy's), and the
    trained policy must give other log-probs (else the comparison proves nothing).

    Returns:
        How many swap configurations were compared.

    Raises:
        RuntimeError: One of these checks failed.
    """
    swaps = [run for run in runs.values() if run.configuration.reference != REFERENCE_FREE]
    first = swaps[0]
    recorded = RECORDED_STEPS * accumulate
    for run in swaps:
        name, batches = run.configuration.name, run.probe.batches
        if len(batches) != recorded:
            raise RuntimeError(
                f"{size} {name}: recorded {len(batches)} micro-batches, not {recorded}"
            )
        for index, (batch, reference) in enumerate(zip(batches, first.probe.batches, strict=True)):
            if not torch.equal(batch["input_ids"], reference["input_ids"]):
                raise RuntimeError(
                    f"{size} {name}: micro-batch {index} has other input ids than in "
                    f"{first.configuration.name}"
                )
            if not torch.equal(batch[REFERENCE_LOGPS_KEY], reference[REFERENCE_LOGPS_KEY]):
                raise RuntimeError(
                    f"{size} {name}: micro-batch {index}'s reference log-probs differ from "
                    f"{first.configuration.name}'s: windows must not change the numbers"
                )
    initial, trained = build_module(SWAP_COPY, size), first.module
    initial.plan = trained.plan  # the same model's plan: the batches' layout
    second_step = first.probe.batches[accumulate:]
    if not all(torch.equal(b[REFERENCE_LOGPS_KEY], logps(initial, b)) for b in second_step):
        raise RuntimeError(
            f"{size}: the second optimizer step's reference log-probs are not those of the "
            "initial weights"
        )
    if all(torch.equal(b[REFERENCE_LOGPS_KEY], logps(trained, b)) for b in second_step):
        raise RuntimeError(f"{size}: training did not change the log-probs; nothing was checked")
    return len(swaps)


def per_micro_batch_name(configuration: Configuration) -> str | None:
    """The per-micro-batch configuration of the same swap mode (``None`` for the ceiling)."""
    if configuration.reference == REFERENCE_FREE:
        return None
    return f"{configuration.reference}, {PER_MICRO_BATCH}"


def size_rows(size: str, runs: dict[str, Run], args: argparse.Namespace) -> list[list[str]]:
    """Rows of one size: brackets, step time, pairs/s, ratios, ms of reference per step."""
    ceiling = median(runs[REFERENCE_FREE].timer.intervals)
    pairs_per_step = args.batch_size * args.accumulate
    rows = []
    for configuration in CONFIGURATIONS:
        if configuration.name not in runs:
            rows.append([size, configuration.name, NOT_ON_CUDA] + [""] * 7)
            continue
        run = runs[configuration.name]
        step, hook = median(run.timer.intervals), median(run.probe.hook_seconds)
        baseline = per_micro_batch_name(configuration)
        speed_up = hook_speed_up = ""
        if baseline is not None:
            speed_up = f"{median(runs[baseline].timer.intervals) / step:.2f}"
            hook_speed_up = f"{median(runs[baseline].probe.hook_seconds) / hook:.2f}"
        rows.append(
            [
                size,
                configuration.name,
                f"{run.brackets / run.optimizer_steps:.2f}",
                f"{step * 1e3:.1f}",
                f"{pairs_per_step / step:.2f}",
                f"{ceiling / step:.2f}",
                speed_up,
                f"{(step - ceiling) * 1e3:.1f}",
                f"{hook * 1e3:.1f}",
                hook_speed_up,
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every size, check the brackets and log-probs, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accumulate", type=int, default=4, help="accumulate_grad_batches")
    args, sizes = parse_round_arguments(parser, 2, "pairs per micro-batch", argv)
    if args.accumulate < 1:
        raise ValueError(f"--accumulate must be >= 1, got {args.accumulate}")
    quiet()
    rows, compared = [], 0
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            runs = run_rounds(size, args, Path(tmp))
        check_brackets(size, runs, args.accumulate)
        compared = check_reference_logps(size, runs, args.accumulate)
        rows += size_rows(size, runs, args)
    k = args.accumulate
    print("# Reference swaps under gradient accumulation: per micro-batch vs per optimizer step\n")
    print(f"Machine: {machine_info()}")
    print(
        f"{args.rounds} rounds x {args.steps} timed optimizer steps per configuration and "
        f"size; accumulate_grad_batches={k}: {k} micro-batches of {args.batch_size} pairs x "
        f"{args.length} tokens per optimizer step; DPO, AdamW, fp32\n"
    )
    print(
        f"Checked ({', '.join(sizes)}): brackets per optimizer step are {k} per micro-batch "
        f"and 1 per optimizer step; the reference log-probs of the first {RECORDED_STEPS} "
        f"optimizer steps ({RECORDED_STEPS * k} micro-batches, same input ids) are bitwise "
        f"equal in all {compared} swap configurations, and in the second step (after an "
        "update) bitwise equal to those of the initial weights.\n"
    )
    headers = [
        "model",
        "configuration",
        "brackets / optimizer step",
        "ms / optimizer step (median)",
        "pairs/s",
        "x reference-free",
        "speed-up vs per micro-batch",
        "reference ms/step",
        "reference hook ms/step",
        "hook speed-up vs per micro-batch",
    ]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
