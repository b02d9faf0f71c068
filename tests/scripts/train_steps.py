"""Train the tiny policy for some steps in a process of its own (crash-and-resume test).

``python tests/scripts/train_steps.py INIT_SEED MAX_STEPS OUT [--ckpt-dir D --crash-at N]
[--resume CKPT] [--max-tokens N]`` writes to OUT the loss of every step it ran and every
batch with its reference log-probs. With ``--ckpt-dir`` a checkpoint is written every 4
steps; with ``--crash-at N`` the process dies (exit code 3) at the start of step N; with
``--max-tokens`` the batches are packed token-budget batches (a step-4 checkpoint then
falls inside an epoch).
"""

from __future__ import annotations

import argparse
import os
from functools import partial

import lightning.pytorch as pl
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.settings import BatchSettings, DataSource
from lightning_dpo.policy import build_policy
from tests.helpers import TINY_POLICY, step_checkpoints

SOURCE = DataSource(num_train=32, num_val=8)  # 4 steps per epoch of 8 pairs


class Record(pl.Callback):
    """Keeps each step's loss and each batch with its reference log-probs."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batches.append({k: v.clone() for k, v in batch.items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.steps.append(trainer.global_step - 1)
        self.losses.append(float(outputs["loss"]))


class CrashAt(pl.Callback):
    """Kills the process at the start of a step, as a crash would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        if trainer.global_step == self.step:
            os._exit(3)


def main() -> None:
    """Parse the arguments, train, save what was seen."""
    parser = argparse.ArgumentParser()
    parser.add_argument("init_seed", type=int)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("out")
    parser.add_argument("--ckpt-dir")
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--max-tokens", type=int, help="token-budget batches, packed")
    args = parser.parse_args()

    budget = {"max_tokens": args.max_tokens, "layout": "packed"} if args.max_tokens else {}
    datamodule = PreferenceDataModule(source=SOURCE, batches=BatchSettings(batch_size=8, **budget))
    torch.manual_seed(args.init_seed)
    policy = build_policy(datamodule.tokenizer, tiny=TINY_POLICY)
    module = PreferenceModule(policy, PreferenceLoss("dpo"), partial(torch.optim.AdamW, lr=1e-2))
    record = Record()
    callbacks = [ReferenceSwapCallback(), record]
    if args.ckpt_dir:
        callbacks.append(step_checkpoints(args.ckpt_dir, every=4))
    if args.crash_at is not None:
        callbacks.append(CrashAt(args.crash_at))
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        logger=False,
        enable_checkpointing=bool(args.ckpt_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=args.resume)
    torch.save(
        {"steps": record.steps, "losses": record.losses, "batches": record.batches}, args.out
    )


if __name__ == "__main__":
    main()
