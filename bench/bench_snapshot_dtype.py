"""What a bf16 host snapshot costs in reference accuracy, and what it saves in memory.

    python bench/bench_snapshot_dtype.py [--quick]

For Llama models of a few sizes (random init, the embedded sort task's validation
set), compares the reference log-probs computed through an exact (fp32) snapshot with
those through a bf16 snapshot, and the DPO loss at step 0 (exactly ln 2 with the exact
snapshot; off by the rounding with bf16).
"""

from __future__ import annotations

import argparse
import math

import torch

from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.settings import BatchSettings, DataSource
from lightning_dpo.losses import PairLogps, dpo_loss
from lightning_dpo.policy import build_tiny_llama
from lightning_dpo.reference import HostSnapshotReference, SnapshotPlacement, reference_context
from lightning_dpo.scoring import ScoringPlan, sequence_logps

SIZES = {
    "tiny (h64, 2 layers)": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
    "small (h256, 4 layers)": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    },
    "medium (h512, 8 layers)": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    },
}


def pair_logps(snapshot, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) reference log-probs of a batch through ``snapshot``."""
    with reference_context(snapshot, model):
        sums = sequence_logps(model, batch, ScoringPlan.unprobed(model)).sums
    return sums.chunk(2)


def compare(model, batches) -> tuple[torch.Tensor, torch.Tensor, float, tuple[int, int]]:
    """Exact and bf16 reference log-probs, step-0 DPO loss with bf16, host bytes."""
    exact = HostSnapshotReference.capture(model)
    half = HostSnapshotReference.capture(
        model, SnapshotPlacement.decide(model, dtype=torch.bfloat16)
    )
    exact_rows, half_rows, losses = [], [], []
    for batch in batches:
        policy = pair_logps(exact, model, batch)  # at step 0 the policy is the reference
        rounded = pair_logps(half, model, batch)
        ones = torch.ones_like(policy[0])
        logps = PairLogps(*policy, *rounded, ones, ones)
        losses.append(dpo_loss(logps, beta=0.1).losses)
        exact_rows.append(torch.cat(policy))
        half_rows.append(torch.cat(rounded))
    loss = float(torch.cat(losses).mean())
    return torch.cat(exact_rows), torch.cat(half_rows), loss, (exact.nbytes, half.nbytes)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    args = parser.parse_args()
    datamodule = PreferenceDataModule(
        source=DataSource(num_train=8, num_val=256), batches=BatchSettings(batch_size=64)
    )
    datamodule.setup()
    batches = list(datamodule.val_dataloader())
    print(
        "| model | params | host MiB fp32 -> bf16 | max abs diff of ref logp | "
        "mean abs diff | mean abs ref logp | step-0 DPO loss (ln 2 = 0.693147) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, overrides in list(SIZES.items())[: 1 if args.quick else None]:
        torch.manual_seed(0)
        model = build_tiny_llama(datamodule.tokenizer, **overrides).eval()
        a, b, loss, (exact_bytes, half_bytes) = compare(model, batches)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"| {name} | {params / 1e6:.2f}M | {exact_bytes / 2**20:.2f} -> "
            f"{half_bytes / 2**20:.2f} | {(a - b).abs().max():.3e} | "
            f"{(a - b).abs().mean():.3e} | {a.abs().mean():.2f} | "
            f"{loss:.6f} (|diff| {abs(loss - math.log(2)):.1e}) |"
        )


if __name__ == "__main__":
    main()
