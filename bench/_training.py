"""Shared training set-up of the memory, throughput and accumulation benchmarks.

Each *configuration* is one way to get the reference log-probs in a real Lightning
``fit`` of :class:`~lightning_dpo.PreferenceModule` (DPO, AdamW, fp32):

* ``swap (copy)`` / ``swap (exchange)``: :class:`~lightning_dpo.ReferenceSwapCallback`
  in snapshot mode with that ``swap_mode``;
* ``resident reference copy``: the baseline of other trainers, written here: a deep copy
  of the policy kept in memory as a second, frozen model and run for each batch;
* ``LoRA (adapters off)``: a peft LoRA policy (r=8, all linear layers), reference = the
  base model with the adapters disabled;
* ``cache``: the callback's reference log-prob cache, when the installed
  ``ReferenceSwapCallback`` has one (else the configuration is reported as not measured);
* ``reference-free``: reference log-probs are zeros, no reference forward: the ceiling.

Data: random lowercase text pairs written to a JSONL file, read by
:class:`~lightning_dpo.PreferenceDataModule` with the character tokenizer (one token per
character, so every row has the requested length). The models' vocabularies are larger
than the tokenizer's (see ``_models.SIZES``): the unused embedding rows still cost their
memory and the logits their full width, as in a real LM.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import random
import string
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from _models import add_threads_argument, build_llama, parse_sizes, set_threads, synchronize
from lightning.pytorch.callbacks import Callback

from lightning_dpo import PreferenceDataModule, PreferenceLoss, PreferenceModule
from lightning_dpo.batch import REFERENCE_LOGPS_KEY, SCORE_LENGTHS_KEY
from lightning_dpo.data import build_char_tokenizer
from lightning_dpo.data.settings import BatchSettings, DataSource, TokenSettings
from lightning_dpo.policy import add_lora
from lightning_dpo.reference import ReferenceSwapCallback
from lightning_dpo.scoring import sequence_logps

SWAP_COPY = "swap (copy)"
SWAP_EXCHANGE = "swap (exchange)"
RESIDENT = "resident reference copy"
LORA = "LoRA (adapters off)"
CACHE = "cache"
REFERENCE_FREE = "reference-free"
CONFIGURATIONS = (SWAP_COPY, SWAP_EXCHANGE, RESIDENT, LORA, CACHE, REFERENCE_FREE)
NOT_AVAILABLE = "not measured: cache not available"


def parse_round_arguments(
    parser: argparse.ArgumentParser, batch_size: int, batch_help: str, argv: list[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """Add the options of the interleaved-rounds benchmarks, parse, apply threads and --quick.

    Options: ``--sizes``, ``--rounds``, ``--steps``, ``--length``, ``--batch-size``
    (default ``batch_size``, described by ``batch_help``), ``--threads``, ``--quick``.

    Returns:
        The arguments and the model sizes to run (``["tiny"]`` with ``--quick``).
    """
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated model sizes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per fit")
    parser.add_argument("--length", type=int, default=64, help="tokens per row")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 round (smoke)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.quick:
        args.rounds, args.steps = 1, 2
    return args, ["tiny"] if args.quick else parse_sizes(args.sizes)


def quiet() -> None:
    """Silence Lightning's per-Trainer banners and warnings (few workers, deprecations)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_dpo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)


def cache_parameter() -> str | None:
    """Name of ``ReferenceSwapCallback``'s cache-directory argument, if it has one."""
    names = inspect.signature(ReferenceSwapCallback.__init__).parameters
    return next((n for n in ("logps_cache_dir", "cache_dir", "cache") if n in names), None)


def write_pairs(path: Path, pairs: int, length: int, seed: int = 0) -> None:
    """Write ``pairs`` random text pairs whose rows tokenise to about ``length`` tokens."""
    rng = random.Random(seed)
    half = max(1, length // 2 - 2)

    def text() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(half))

    rows = [{"prompt": text(), "chosen": text(), "rejected": text()} for _ in range(pairs)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def build_datamodule(
    directory: Path, pairs: int, batch_size: int, length: int, step_windows: bool = True
) -> PreferenceDataModule:
    """The data module over freshly written random pairs (character tokenizer, given explicitly).

    Args:
        directory: Where the pairs file is written.
        pairs: Pairs written (the validation split takes a tenth).
        batch_size: Pairs per (micro-)batch.
        length: Tokens per row.
        step_windows: ``BatchSettings(step_windows=...)``: under
            gradient accumulation, collate each optimizer step's micro-batches together so
            the reference is swapped in once per step (only matters with
            ``accumulate_grad_batches > 1``).
    """
    file = directory / "pairs.jsonl"
    write_pairs(file, pairs, length)
    datamodule = PreferenceDataModule(
        tokenizer=build_char_tokenizer(),
        source=DataSource(train_file=str(file), val_fraction=0.1),
        batches=BatchSettings(batch_size=batch_size, step_windows=step_windows),
        tokens=TokenSettings(max_length=length),
    )
    datamodule.setup()
    return datamodule


class ResidentReferenceCallback(Callback):
    """Baseline: a deep copy of the initial policy, kept in memory and run per batch."""

    def __init__(self) -> None:
        self.reference: torch.nn.Module | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the policy once (the copy is frozen and in eval mode)."""
        if self.reference is None:
            self.reference = copy.deepcopy(pl_module.policy).eval().requires_grad_(False)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Run the second model on the batch."""
        assert self.reference is not None
        with torch.no_grad():
            logps = sequence_logps(self.reference, batch, pl_module.plan)
        batch[REFERENCE_LOGPS_KEY] = logps.sums


class ZeroReferenceCallback(Callback):
    """The ceiling: reference log-probs are zeros; no reference forward at all."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach zeros of the right shape."""
        sequences = batch[SCORE_LENGTHS_KEY].shape[0]  # 2B, whatever the layout's rows
        batch[REFERENCE_LOGPS_KEY] = torch.zeros(sequences, device=batch["input_ids"].device)


class StepTimer(Callback):
    """Wall time between consecutive training-batch starts (the whole step, data included).

    Put it first in the callback list so that its hooks run before the reference's.
    The first step of each fit is not counted (the optimizer allocates its state there);
    ``fit_start_seconds`` records, per fit, the time from ``on_fit_start`` to the first
    batch (the one-off set-up of the reference: snapshot, deep copy or cache pass).
    """

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self.fit_start_seconds: list[float] = []
        self._fit_start = 0.0
        self._last: float | None = None
        self._seen = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock of this fit."""
        self._fit_start, self._last, self._seen = time.perf_counter(), None, 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record the time since the previous batch start (from the second step on)."""
        synchronize(pl_module.device)
        now = time.perf_counter()
        if self._last is None:
            self.fit_start_seconds.append(now - self._fit_start)
        elif self._seen >= 2:
            self.intervals.append(now - self._last)
        self._last, self._seen = now, self._seen + 1


class OptimizerStepTimer(Callback):
    """Wall time per optimizer step, between training-batch ends at which a step was taken.

    Under gradient accumulation one optimizer step spans ``accumulate_grad_batches``
    micro-batches, and where the reference of all of them is computed at the first one,
    batch-to-batch intervals are uneven; the time from one step's last micro-batch end to
    the next's is the whole step (data, reference, forwards and backwards, optimizer).
    The first step of each fit (from ``on_fit_start``; the optimizer allocates its state
    there) is not counted. Put it first in the callback list.
    """

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self._last: float | None = None
        self._step = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Forget the previous fit's clock."""
        self._last, self._step = None, trainer.global_step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record the time since the previous optimizer step, if this batch ended one."""
        if trainer.global_step == self._step:
            return
        synchronize(pl_module.device)
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last, self._step = now, trainer.global_step


def reference_callback(name: str, cache_dir: Path | None) -> Callback:
    """The callback that gives each batch its reference log-probs in configuration ``name``.

    Raises:
        ValueError: ``name`` is unknown, or ``cache`` is asked for without cache support.
    """
    if name in (SWAP_COPY, SWAP_EXCHANGE):
        swap_mode = "copy" if name == SWAP_COPY else "exchange"
        return ReferenceSwapCallback(mode="snapshot", swap_mode=swap_mode)
    if name == RESIDENT:
        return ResidentReferenceCallback()
    if name == LORA:
        return ReferenceSwapCallback(mode="disable_adapters")
    if name == REFERENCE_FREE:
        return ZeroReferenceCallback()
    if name == CACHE:
        parameter = cache_parameter()
        if parameter is None or cache_dir is None:
            raise ValueError(NOT_AVAILABLE)
        return ReferenceSwapCallback(mode="auto", **{parameter: str(cache_dir)})
    raise ValueError(f"unknown configuration {name!r}; valid: {', '.join(CONFIGURATIONS)}")


def build_module(name: str, size: str) -> PreferenceModule:
    """The policy of configuration ``name`` at ``size`` inside a DPO module (AdamW)."""
    policy = build_llama(size)
    if name == LORA:
        policy = add_lora(policy, r=8, lora_alpha=16)
    return PreferenceModule(
        policy,
        loss=PreferenceLoss("dpo", beta=0.1),
        optimizer=partial(torch.optim.AdamW, lr=1e-5),
    )


def build_trainer(
    max_steps: int, callbacks: list[Callback], accelerator: str, accumulate_grad_batches: int = 1
) -> pl.Trainer:
    """A bare Trainer: no logger, checkpoints, progress bar or validation.

    ``max_steps`` counts optimizer steps, each of ``accumulate_grad_batches`` batches.
    """
    return pl.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate_grad_batches,
        accelerator=accelerator,
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
