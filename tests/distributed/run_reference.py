"""Two-process CPU (gloo) run of ReferenceSwapCallback under DDP or FSDP2.

Launched by tests/test_distributed.py as ``python tests/distributed/run_reference.py
STRATEGY OUT_DIR [ACCUMULATE]``; Lightning starts the second rank by re-running this
command. Each rank writes ``OUT_DIR/rank{r}.pt`` with its batches, their reference
log-probs, the snapshot's fingerprint and bytes, the number of reference brackets and its
peak RSS.
"""

from __future__ import annotations

import resource
import sys
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.policy import build_policy
from lightning_dpo.reference import snapshot_fingerprint
from lightning_dpo.reference.diagnostics import BracketCounter
from tests.conftest import make_bare_trainer

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


class Record(pl.Callback):
    """Keeps each training batch with its reference log-probs."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batches.append({k: v.detach().cpu().clone() for k, v in batch.items()})


def main(strategy_name: str, out_dir: Path, accumulate: int = 1) -> None:
    """Train 4 optimizer steps on 2 CPU processes and save what each rank saw."""
    datamodule = PreferenceDataModule(num_train=64, num_val=16, batch_size=4)
    torch.manual_seed(0)
    policy = build_policy(datamodule.tokenizer, tiny=TINY)
    # Under ModelParallelStrategy, PreferenceModule.configure_model shards with FSDP2.
    module = PreferenceModule(policy, PreferenceLoss("dpo"), partial(torch.optim.AdamW, lr=1e-2))
    if strategy_name == "fsdp2":
        strategy = pl.strategies.ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        strategy = "ddp"
    reference, record = ReferenceSwapCallback(), Record()
    trainer = make_bare_trainer(
        out_dir,
        [reference, record],
        max_steps=4,
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        accumulate_grad_batches=accumulate,
    )
    with BracketCounter() as brackets:
        trainer.fit(module, datamodule=datamodule)
    snapshot = reference.weights.snapshot
    torch.save(
        {
            "batches": record.batches,
            "fingerprint": snapshot_fingerprint(snapshot),
            "snapshot_bytes": reference.weights.nbytes,
            "snapshot_shapes": {k: tuple(v.shape) for k, v in snapshot.items()},
            "brackets": brackets.of(reference),
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "key": REFERENCE_LOGPS_KEY,
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *(int(arg) for arg in sys.argv[3:]))
