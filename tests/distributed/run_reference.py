"""Two-process CPU (gloo) run of ReferenceSwapCallback under DDP or FSDP2.

Launched by tests/test_distributed.py as ``python tests/distributed/run_reference.py
STRATEGY OUT_DIR [--accumulate K] [--cache DIR] [--sync-every N] [--kill-rank-1-at STEP]
[--nodes 2]``; Lightning starts the second rank by re-running this command (with
``--nodes 2`` the test starts one process per "node" itself, with ``NODE_RANK``). Each rank
writes ``OUT_DIR/rank{r}.pt`` with its batches, their reference log-probs, the snapshot's
fingerprint and bytes (none with a cache), the proportional set size of the node-shared
snapshot it maps, the number of reference brackets and policy forwards, and its peak RSS.
``--kill-rank-1-at STEP`` kills rank 1 with SIGKILL at the start of that step;
``--ckpt-dir D`` checkpoints every 2 steps, ``--resume CKPT --init-seed S`` resumes a
differently initialised policy from one.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.settings import BatchSettings, DataSource
from lightning_dpo.policy import build_policy
from lightning_dpo.reference import snapshot_fingerprint
from lightning_dpo.reference.node_share import mapped_pss_bytes
from tests.helpers import TINY_POLICY, brackets_of, make_bare_trainer, step_checkpoints


class Forwards(pl.Callback):
    """Counts the policy's forwards from fit start: the cache pass, reference and policy.

    First in the callback list, so that its ``on_fit_start`` runs before the reference's.
    """

    def __init__(self) -> None:
        self.count = 0

    def on_fit_start(self, trainer, pl_module):  # noqa: D102
        pl_module.policy.register_forward_hook(lambda *_: setattr(self, "count", self.count + 1))


class Record(pl.Callback):
    """Keeps each training batch with its reference log-probs."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batches.append({k: v.detach().cpu().clone() for k, v in batch.items()})


class KillAt(pl.Callback):
    """SIGKILLs this process at the start of a step (rank 1 only), as the OOM killer would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        if trainer.global_rank == 1 and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(args: argparse.Namespace) -> None:
    """Train 4 optimizer steps on 2 CPU processes and save what each rank saw."""
    datamodule = PreferenceDataModule(
        source=DataSource(num_train=64, num_val=16), batches=BatchSettings(batch_size=4)
    )
    torch.manual_seed(args.init_seed)
    policy = build_policy(datamodule.tokenizer, tiny=TINY_POLICY)
    # Under ModelParallelStrategy, PreferenceModule.configure_model shards with FSDP2.
    module = PreferenceModule(policy, PreferenceLoss("dpo"), partial(torch.optim.AdamW, lr=1e-2))
    if args.strategy == "fsdp2":
        strategy = pl.strategies.ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        strategy = "ddp"
    reference = ReferenceSwapCallback(logps_cache_dir=args.cache, sync_every=args.sync_every)
    record, forwards = Record(), Forwards()
    callbacks = [forwards, reference, record]
    if args.kill_rank_1_at is not None:
        callbacks.append(KillAt(args.kill_rank_1_at))
    if args.ckpt_dir is not None:
        callbacks.append(step_checkpoints(args.ckpt_dir, every=2))
    trainer = make_bare_trainer(
        args.out_dir,
        callbacks,
        max_steps=4,
        accelerator="cpu",
        devices=2 // args.nodes,
        num_nodes=args.nodes,
        strategy=strategy,
        accumulate_grad_batches=args.accumulate,
        enable_checkpointing=args.ckpt_dir is not None,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=args.resume)
    weights = reference.weights
    snapshot = weights.snapshot if weights is not None else {}
    trainable = {n: p.detach() for n, p in module.policy.named_parameters() if p.requires_grad}
    torch.save(
        {
            "batches": record.batches,
            "fingerprint": snapshot_fingerprint(snapshot) if snapshot else None,
            "policy_fingerprint": snapshot_fingerprint(trainable),
            "snapshot_bytes": weights.nbytes if snapshot else 0,
            "snapshot_shapes": {k: tuple(v.shape) for k, v in snapshot.items()},
            "shared_pss": mapped_pss_bytes(),
            "node_rank": trainer.node_rank,
            "brackets": brackets_of(reference),
            "forwards": forwards.count,
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "key": REFERENCE_LOGPS_KEY,
        },
        args.out_dir / f"rank{trainer.global_rank}.pt",
    )


def parse() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("strategy", choices=["ddp", "fsdp2"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--cache")
    parser.add_argument("--sync-every", type=int)
    parser.add_argument("--kill-rank-1-at", type=int)
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    parser.add_argument("--init-seed", type=int, default=0)
    parser.add_argument("--ckpt-dir", help="checkpoint every 2 steps here")
    parser.add_argument("--resume", help="a checkpoint to resume from")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
