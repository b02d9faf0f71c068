"""One command that runs every CUDA path of the project and prints one table.

    python bench/gpu_check.py                       # one CUDA GPU, a few minutes
    python bench/gpu_check.py --device cpu --quick  # the same code on the CPU (smoke only)

Rows, each measured in this run:

1. pinned host-to-device bandwidth: one pinned buffer of the 100M model's bytes copied to
   the device (the unit of the next row);
2. the reference swap in copy mode (``HostSnapshotReference``, pinned, ``non_blocking``):
   one bracket moves the trainable bytes three times (stash, reference in, training back);
   its effective bandwidth as a fraction of row 1 (goal >= 0.8);
3. the reference bracket's share of a training step (swap + reference forward, against
   reference + policy forward and backward + AdamW step) at ~100M and ~1B parameters;
4. device memory of a training step at ~100M: swap, a resident reference copy (what other
   trainers keep), LoRA with the adapters disabled;
5. the bf16-mixed step-0 DPO loss (ln 2 = 0.693147: reference and policy agree);
6. the layouts and the response-only head on the device: largest difference of the
   per-sequence log-probs from the padded layout's plain path, fp32.

On the CPU (``--device cpu``) nothing is pinned and the figures say nothing about a GPU:
the mode exists so that the script itself is tested where no GPU is.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable

import torch
from _models import build_llama, markdown_table

from lightning_dpo import PreferenceLoss
from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.policy import add_lora
from lightning_dpo.reference import HostSnapshotReference, SnapshotPlacement, reference_context
from lightning_dpo.reference.weights.adapters import AdapterDisabledReference
from lightning_dpo.scoring import ScoringPlan, pair_logps, sequence_logps

SIZES_1B = {"1B": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 18}}
"""A ~1B Llama (32k vocabulary, 16 heads): the second size of row 3."""


def synchronize(device: torch.device) -> None:
    """Wait for queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model(size: str, device: torch.device, quick: bool) -> torch.nn.Module:
    """A random Llama of ``size`` on ``device`` (``tiny`` when ``quick``)."""
    if quick:
        return build_llama("tiny").to(device)
    if size == "1B":
        policy = build_llama("100M")
        config = copy.deepcopy(policy.config)
        for key, value in SIZES_1B["1B"].items():
            setattr(config, key, value)
        config.num_attention_heads = config.num_key_value_heads = 16
        return type(policy)(config).to(device)
    return build_llama(size).to(device)


def batch(device: torch.device, vocab: int, pairs: int = 8, seed: int = 0) -> dict:
    """``pairs`` random pairs (prompt 192, responses 64 tokens), packed, on ``device``."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(count: int) -> tuple[int, ...]:
        return tuple(torch.randint(3, vocab, (count,), generator=generator).tolist())

    data = [TokenizedPair(tokens(192), tokens(64), tokens(64)) for _ in range(pairs)]
    return {
        layout: {k: v.to(device) for k, v in collate_pairs(data, 0, layout).items()}
        for layout in ("padded", "prefix_shared", "packed")
    }


def bandwidth_rows(device: torch.device, quick: bool) -> list[list[str]]:
    """Rows 1 and 2: pinned H2D bandwidth, and the copy-mode bracket against it."""
    policy = model("100M", device, quick)
    nbytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    pinned = device.type == "cuda"
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)
    copy_seconds = timed(lambda: target.copy_(host, non_blocking=pinned), device, 10)
    h2d = nbytes / copy_seconds / 1e9
    snapshot = HostSnapshotReference.capture(
        policy, SnapshotPlacement.decide(policy, swap_mode="copy")
    )

    def bracket() -> None:
        with snapshot.reference(policy):
            pass

    swap = 3 * nbytes / timed(bracket, device, 10) / 1e9
    return [
        ["pinned host-to-device copy", f"{h2d:.1f} GB/s", f"{nbytes / 2**20:.0f} MiB"],
        ["swap bracket, copy mode (3 transfers)", f"{swap:.1f} GB/s", f"{swap / h2d:.2f} x H2D"],
    ]


def dpo_step(policy, reference, data, optimizer, resident=None) -> float:
    """One DPO step: the reference bracket, then policy forward, backward, AdamW; its loss.

    With ``resident`` (a second, frozen model) the reference is that model instead.
    """
    scorer = resident or policy
    with reference_context(reference, policy):
        ref = sequence_logps(scorer, data, ScoringPlan.unprobed(scorer, "packed", True)).sums
    plan = ScoringPlan.unprobed(policy, "packed", True)  # every caller passes packed batches
    logps = pair_logps(sequence_logps(policy, data, plan), ref)
    loss = PreferenceLoss("dpo")(logps).losses.mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def share_row(size: str, device: torch.device, quick: bool) -> list[str]:
    """Row 3 at one size: the reference bracket's share of a training step."""
    policy = model(size, device, quick)
    reference = HostSnapshotReference.capture(policy)
    data = batch(device, policy.config.vocab_size)["packed"]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)

    def forward_only() -> None:
        with reference_context(reference, policy):
            sequence_logps(policy, data, ScoringPlan.unprobed(policy, "packed", True))

    step = timed(lambda: dpo_step(policy, reference, data, optimizer), device, 3)
    bracket = timed(forward_only, device, 3)
    params = sum(p.numel() for p in policy.parameters()) / 1e6
    return [f"reference share of a step, {params:.0f}M", f"{bracket / step:.2f}", f"{step:.3f} s"]


def share_rows(device: torch.device, quick: bool) -> list[list[str]]:
    """Row 3: the reference bracket's share of a training step, at ~100M and ~1B."""
    return [share_row(size, device, quick) for size in ("100M", "1B")]


def memory_rows(device: torch.device, quick: bool) -> list[list[str]]:
    """Row 4: peak device memory of a training step: swap, resident copy, LoRA."""
    if device.type != "cuda":
        return [["device memory of a step", "n/a on the CPU", ""]]
    rows = []
    for name in ("swap (copy)", "resident reference copy", "LoRA (adapters off)"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        policy = model("100M", device, quick)
        resident = None
        if name.startswith("LoRA"):
            policy = add_lora(policy, r=8, lora_alpha=16)
            reference = AdapterDisabledReference()
        elif name.startswith("resident"):
            resident = copy.deepcopy(policy).requires_grad_(False)
            reference = None
        else:
            reference = HostSnapshotReference.capture(
                policy, SnapshotPlacement.decide(policy, swap_mode="copy")
            )
        data = batch(device, policy.config.vocab_size)["packed"]
        trainable = [p for p in policy.parameters() if p.requires_grad]
        dpo_step(policy, reference, data, torch.optim.AdamW(trainable, lr=1e-6), resident)
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append([f"device memory of a step, {name}", f"{peak:.2f} GiB", "100M"])
        del policy, resident, reference
    return rows


def bf16_row(device: torch.device, quick: bool) -> list[str]:
    """Row 5: the bf16-mixed step-0 DPO loss."""
    policy = model("100M", device, quick)
    reference = HostSnapshotReference.capture(policy)
    data = batch(device, policy.config.vocab_size)["packed"]
    dtype = torch.bfloat16
    with torch.autocast(device.type, dtype=dtype):
        loss = dpo_step(policy, reference, data, torch.optim.SGD(policy.parameters(), lr=0.0))
    gap = abs(loss - math.log(2))
    return ["bf16-mixed step-0 DPO loss", f"{loss:.6f}", f"{gap:.1e} from ln 2"]


def layout_rows(device: torch.device, quick: bool) -> list[list[str]]:
    """Row 6: each layout with the response-only head against the padded plain path."""
    policy = model("100M", device, quick).eval()
    batches = batch(device, policy.config.vocab_size)
    with torch.no_grad():
        plain_plan = ScoringPlan.unprobed(policy, "padded", chunk_size=None)
        plain = sequence_logps(policy, batches["padded"], plain_plan).sums
        rows = []
        for layout, data in batches.items():
            ours = sequence_logps(policy, data, ScoringPlan.unprobed(policy, layout, True)).sums
            difference = float((ours - plain).abs().max())
            name = f"{layout} + response-only head, fp32"
            rows.append([name, f"{difference:.1e}", "largest difference from padded plain"])
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run every check, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke)")
    parser.add_argument("--quick", action="store_true", help="tiny models (smoke)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing was checked (--device cpu: smoke only)")
        sys.exit(2)
    checks: list[Callable[[torch.device, bool], list]] = [
        bandwidth_rows,
        share_rows,
        memory_rows,
        lambda d, q: [bf16_row(d, q)],
        layout_rows,
    ]
    rows = [row for check in checks for row in check(device, args.quick)]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke: not a GPU)"
    print(f"# GPU check on {name}, torch {torch.__version__}\n")
    print(markdown_table(["check", "value", "detail"], rows))


if __name__ == "__main__":
    main()
