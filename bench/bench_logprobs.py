"""Peak memory of the log-prob step: chunked scoring vs a full float32 log-softmax.

    python bench/bench_logprobs.py [--quick]

Scores ``[2B, T]`` labels under ``[2B, T, V]`` logits (vocabulary 32k), as the reference
step does (no grad) and as the policy step does (forward + backward), with the plain
``log_softmax(...).gather`` and with :func:`lightning_dpo.scoring.token_logps` chunked.
Each variant runs in its own process; the figure is the peak host RSS above the RSS once
the logits exist (the memory the step itself adds), and the ratio to the plain step. On
CUDA the same is measured with the allocator's peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from lightning_dpo.scoring import token_logps

VOCAB = 32_000


def current_rss_kib() -> int:
    """Resident set size now, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(variant: str, rows: int, length: int, dtype: str, grad: bool) -> dict[str, float]:
    """Run one step of ``variant`` in this process; return its added peak memory."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    logits = torch.randn(rows, length, VOCAB, device=device, dtype=getattr(torch, dtype))
    logits.requires_grad_(grad)
    labels = torch.randint(0, VOCAB, (rows, length), device=device)
    chunk = None if variant == "plain" else int(variant.split("=")[1])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss_kib() * 1024
    with torch.set_grad_enabled(grad):
        logps = token_logps(logits, labels, chunk)
        if grad:
            logps.sum().backward()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"added_mib": (peak - base) / 2**20, "logits_mib": logits.nbytes / 2**20}


def main() -> None:
    """Spawn one process per variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller batch")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--grad", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    rows, length = (4, 64) if args.quick else (8, 256)
    if args.variant:
        print(json.dumps(measure(args.variant, rows, length, args.dtype, args.grad)))
        return
    variants = ["plain", "chunk=256", "chunk=64", "chunk=16"]
    results = {}
    for grad in (False, True):
        for variant in variants:
            command = [sys.executable, __file__, "--variant", variant, "--dtype", args.dtype]
            command += ["--quick"] * args.quick + ["--grad"] * grad
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[grad, variant] = json.loads(out.strip().splitlines()[-1])
    logits_mib = results[False, "plain"]["logits_mib"]
    print(
        f"logits [{rows}, {length}, {VOCAB}] {args.dtype}: {logits_mib:.0f} MiB "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)\n"
    )
    print("| step | scoring | added peak MiB | ratio to plain | in logits sizes |")
    print("| --- | --- | ---: | ---: | ---: |")
    for grad in (False, True):
        step = "policy (fwd + bwd)" if grad else "reference (no grad)"
        plain = results[grad, "plain"]["added_mib"]
        for variant in variants:
            added = results[grad, variant]["added_mib"]
            print(
                f"| {step} | {variant} | {added:.0f} | {added / plain:.2f} | "
                f"{added / logits_mib:.2f} |"
            )


if __name__ == "__main__":
    main()
