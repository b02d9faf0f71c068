"""What fingerprinting a checkpoint's weights and optimizer state costs, against saving it.

    python bench/bench_checkpoint_integrity.py [--sizes 10M,100M] [--repeats 3] [--quick]

For Llamas of the named sizes after one AdamW step, builds the checkpoint a run writes
(policy weights, AdamW moments, the reference snapshot in the callback state) and times,
interleaved: ``torch.save`` of it to a file, ``stamp_checkpoint`` (one xxh3-128 per
weight and optimizer tensor, what ``PreferenceModule.on_save_checkpoint`` adds to every
save), ``verify_checkpoint`` (what every load adds), and SHA-256 over the same tensors
(the hash the reference snapshot used before, for scale).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import torch
from _models import (
    add_threads_argument,
    build_llama,
    machine_info,
    markdown_table,
    median,
    mib,
    parse_sizes,
    set_threads,
    time_interleaved,
)

from lightning_dpo.integrity import named_tensors, stamp_checkpoint, verify_checkpoint


def checkpoint_of(size: str) -> dict:
    """The checkpoint of a ``size`` Llama after one AdamW step (the reference = step 0)."""
    model = build_llama(size)
    reference = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(input_ids=torch.ones(1, 8, dtype=torch.long)).logits.mean().backward()
    optimizer.step()
    return {
        "state_dict": {f"policy.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [optimizer.state_dict()],
        "callbacks": {"ReferenceSwapCallback": {"reference_snapshot": reference}},
    }


def sha256_of(checkpoint: dict) -> str:
    """SHA-256 over the bytes of the tensors ``stamp_checkpoint`` fingerprints."""
    digest = hashlib.sha256()
    sections = {k: checkpoint[k] for k in ("state_dict", "optimizer_states")}
    for _, tensor in sorted(named_tensors(sections).items()):
        digest.update(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def measure(size: str, repeats: int, directory: Path) -> list[object]:
    """One table row: sizes, median times and their ratios to the save."""
    checkpoint = checkpoint_of(size)
    stamped = dict(checkpoint)
    stamp_checkpoint(stamped)
    path = directory / f"{size}.ckpt"
    times = time_interleaved(
        {
            "save": lambda: torch.save(checkpoint, path),
            "stamp": lambda: stamp_checkpoint(dict(checkpoint)),
            "verify": lambda: verify_checkpoint(stamped, "bench"),
            "sha256": lambda: sha256_of(checkpoint),
        },
        repeats,
    )
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    sections = {k: checkpoint[k] for k in ("state_dict", "optimizer_states")}
    hashed = sum(t.numel() * t.element_size() for t in named_tensors(sections).values())
    return [
        size,
        mib(path.stat().st_size),
        mib(hashed),
        f"{ms['save']:.1f}",
        f"{ms['stamp']:.1f} ({ms['stamp'] / ms['save']:.3f})",
        f"{ms['verify']:.1f} ({ms['verify'] / ms['save']:.3f})",
        f"{ms['sha256']:.1f} ({ms['sha256'] / ms['save']:.3f})",
    ]


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,100M", help="model sizes (default 10M,100M)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="the tiny model, 1 round")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    sizes, repeats = (["tiny"], 1) if args.quick else (parse_sizes(args.sizes), args.repeats)
    with tempfile.TemporaryDirectory() as directory:
        rows = [measure(size, repeats, Path(directory)) for size in sizes]
    headers = [
        "model",
        "checkpoint MiB",
        "fingerprinted MiB",
        "torch.save ms",
        "stamp ms (x save)",
        "verify ms (x save)",
        "SHA-256 ms (x save)",
    ]
    print(markdown_table(headers, rows))
    print(f"\nmedian of {repeats} interleaved rounds; {machine_info()}")


if __name__ == "__main__":
    main()
