r"""Benchmark: writing a checkpoint with ``AtomicCheckpointIO`` against Lightning's own writer.

Run::

    python bench/bench_checkpoint_write.py [--size 135M] [--rounds 3] [--dir /tmp] [--quick]

A checkpoint as a full-parameter run writes it (a random Llama of ``--size``: its weights
and AdamW's two moments, fp32) is written ``--rounds`` times by each writer into ``--dir``:

- **Lightning**: ``TorchCheckpointIO`` (2.6): ``torch.save`` into memory, then through an
  fsspec transaction from the system temporary folder to the target; no fsync;
- **atomic**: ``AtomicCheckpointIO``: ``torch.save`` streamed to a temporary beside the
  target, flush, fsync, ``os.replace``, fsync of the folder.

Each writer runs in a process of its own, twice (once with ``--quick``), alternating
(Lightning, atomic, Lightning, atomic): the time is the median write, the memory the peak
RSS a write adds over the RSS with the checkpoint built (``VmHWM`` reset before the
writes). fsync makes the atomic writer wait for the disk, which Lightning's leaves to the
page cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _models import (
    add_threads_argument,
    build_llama,
    machine_info,
    markdown_table,
    median,
    set_threads,
    status_kib,
)
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_dpo.checkpoint_io import AtomicCheckpointIO

WRITERS = {
    "Lightning TorchCheckpointIO": TorchCheckpointIO,
    "AtomicCheckpointIO": AtomicCheckpointIO,
}


def checkpoint_of(size: str) -> dict:
    """Weights and AdamW's two moments of a random Llama of ``size``, after one step."""
    model = build_llama(size)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).logits.sum().backward()
    optimizer.step()
    return {
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "global_step": 1,
    }


def child(writer: str, size: str, rounds: int, directory: Path) -> dict[str, float]:
    """In this process: build the checkpoint, write it ``rounds`` times, report."""
    checkpoint = checkpoint_of(size)
    io = WRITERS[writer]()
    target = directory / "last.ckpt"
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = status_kib("VmRSS")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        io.save_checkpoint(checkpoint, target)
        times.append(time.perf_counter() - start)
    return {
        "seconds": median(times),
        "added_mib": (status_kib("VmHWM") - base) / 1024,
        "file_mib": target.stat().st_size / 2**20,
    }


def run_child(args: argparse.Namespace, writer: str, directory: Path) -> dict[str, float]:
    """One writer in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--child",
        writer,
        "--size",
        args.size,
        "--rounds",
        str(args.rounds),
        "--dir",
        str(directory),
        "--threads",
        str(args.threads),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Print the table (or, with ``--child``, one writer's figures as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="135M", help="the model whose checkpoint is written")
    parser.add_argument("--rounds", type=int, default=3, help="writes per process")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 round, 1 process")
    parser.add_argument("--child", choices=list(WRITERS), help=argparse.SUPPRESS)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    processes = 2
    if args.quick:
        args.size, args.rounds, processes = "tiny", 1, 1
    if args.child:
        print(json.dumps(child(args.child, args.size, args.rounds, Path(args.dir))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results: dict[str, list[dict[str, float]]] = {writer: [] for writer in WRITERS}
        for _ in range(processes):
            for writer in WRITERS:
                folder = Path(tmp) / writer
                folder.mkdir(exist_ok=True)
                results[writer].append(run_child(args, writer, folder))
    lightning = results["Lightning TorchCheckpointIO"]
    base_seconds = median([r["seconds"] for r in lightning])
    base_mib = median([r["added_mib"] for r in lightning])
    rows = []
    for writer, runs in results.items():
        seconds = median([r["seconds"] for r in runs])
        added = median([r["added_mib"] for r in runs])
        rows.append(
            [
                writer,
                f"{runs[0]['file_mib']:,.1f}",
                f"{seconds:.3g}",
                f"{seconds / base_seconds:.2f}",
                f"{added:,.0f}",
                f"{added / base_mib:.2f}" if base_mib > 1 else "-",
            ]
        )
    headers = ["writer", "file MiB", "s per write", "x", "peak RSS added MiB", "x"]
    print(markdown_table(headers, rows))
    writes = f"median of {processes * args.rounds} writes in {processes} processes per writer"
    print(f"\n{args.size}, {writes}; x: against Lightning's; {machine_info()}")


if __name__ == "__main__":
    main()
