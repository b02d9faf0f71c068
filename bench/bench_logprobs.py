"""Peak memory of the log-prob step at a real vocabulary: plain, chunked, response-only head.

    python bench/bench_logprobs.py [--vocab 128000] [--quick]

The step scores the response tokens of a batch from the decoder's last hidden states
``[rows, T, H]`` through an LM head ``Linear(H, V)``, as the reference does (no grad) and
as the policy does (forward and backward, down to the hidden states and the head's weight):

- ``plain``: ``log_softmax(head(hidden)).gather`` over every position, then the scored ones
  (what a model's own logits give);
- ``logits, chunked``: the head's full logits, scored 64 positions at a time without the
  float32 log-softmax (this package before the response-only head);
- ``response-only head``: :func:`lightning_dpo.scoring.head_label_logps` on the scored
  positions' hidden states, 64 at a time, the logits recomputed in backward.

A quarter of the positions are scored (prompt-heavy real data: 3/4 of positions are prompt).
Each variant runs in its own process; the figure is the peak RSS above the RSS once the
hidden states and the head exist (the step's own memory, the head's weight gradient
included), and the ratio to ``plain``. The processes run with glibc's
``MALLOC_MMAP_THRESHOLD_=65536``, so that every large buffer goes back to the system when
freed and the peak RSS is the peak of live memory (with the default, freed buffers
linger and two runs of the same variant differed by 20%). On CUDA the allocator's peak is
measured instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from lightning_dpo.scoring import head_label_logps, token_logps

VARIANTS = ("plain", "logits, chunked", "response-only head")
MEASURING_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
"""Large buffers mmapped and unmapped on free: peak RSS = peak live memory."""
CHUNK = 64


def current_rss_kib() -> int:
    """Resident set size now, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def step(variant: str, hidden: torch.Tensor, head: torch.nn.Linear, positions, labels) -> None:
    """One scoring of ``labels`` at the flat ``positions``, backward if grads are on."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    if variant == "response-only head":
        logps, _ = head_label_logps(flat.index_select(0, positions), head, labels, CHUNK)
    else:
        logits = head(flat)
        if variant == "plain":
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            logps = log_probs.index_select(0, positions).gather(-1, labels[:, None])
        else:
            logps = token_logps(logits.index_select(0, positions), labels, CHUNK)
    if torch.is_grad_enabled():
        logps.sum().backward()


def measure(variant: str, rows: int, length: int, hidden_size: int, vocab: int, grad: bool):
    """Run one step of ``variant`` in this process; return its added peak memory in MiB."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hidden = torch.randn(rows, length, hidden_size, device=device, requires_grad=grad)
    head = torch.nn.Linear(hidden_size, vocab, bias=False, device=device).requires_grad_(grad)
    positions = torch.randperm(rows * length, device=device)[: rows * length // 4].sort().values
    labels = torch.randint(0, vocab, positions.shape, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss_kib() * 1024
    with torch.set_grad_enabled(grad):
        step(variant, hidden, head, positions, labels)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"added_mib": (peak - base) / 2**20}


def main() -> None:
    """Spawn one process per variant and step, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=128_000, help="vocabulary size")
    parser.add_argument("--quick", action="store_true", help="a small batch and vocabulary")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--grad", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows, length, hidden, vocab = (4, 64, 64, 8_000) if args.quick else (8, 256, 256, args.vocab)
    if args.variant:
        print(json.dumps(measure(args.variant, rows, length, hidden, vocab, args.grad)))
        return
    results = {}
    for grad in (False, True):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--variant", variant, "--vocab", str(vocab)]
            command += ["--quick"] * args.quick + ["--grad"] * grad
            out = subprocess.run(
                command, capture_output=True, text=True, check=True, env=MEASURING_ENV
            ).stdout
            results[grad, variant] = json.loads(out.strip().splitlines()[-1])["added_mib"]
    logits_mib = rows * length * vocab * 4 / 2**20
    print(
        f"hidden [{rows}, {length}, {hidden}], head {hidden} x {vocab}, a quarter of the "
        f"positions scored; fp32 logits would be {logits_mib:.0f} MiB, the head's weight "
        f"{hidden * vocab * 4 / 2**20:.0f} MiB (torch {torch.__version__})\n"
    )
    print("| step | scoring | added peak MiB | x plain |")
    print("| --- | --- | ---: | ---: |")
    for grad in (False, True):
        name = "policy (fwd + bwd)" if grad else "reference (no grad)"
        plain = results[grad, "plain"]
        for variant in VARIANTS:
            added = results[grad, variant]
            print(f"| {name} | {variant} | {added:.0f} | {added / plain:.3f} |")


if __name__ == "__main__":
    main()
