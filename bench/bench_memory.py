"""Benchmark: peak host RSS (and CUDA memory) of a few training steps per reference strategy.

Run: ``python bench/bench_memory.py [--size 100M] [--steps 3] [--quick]``.

Each configuration of ``_training.py`` (host-snapshot swap in copy and exchange mode, a
second resident reference model, LoRA with the adapters disabled, the reference
log-prob cache when the package has one, and a reference-free loop) runs ``--steps``
training steps of a Lightning ``fit`` in a process of its own, forked from a server that
has imported torch and Lightning but built nothing. Each process resets its peak-RSS
counter (``/proc/self/clear_refs``) once the imports are done, so:

* ``peak RSS`` is the process's high-water resident set (``VmHWM``), imports included;
* ``above baseline`` is that peak minus the RSS right after the imports: what the model,
  optimizer, reference and activations cost.

Ratios are to the ``swap (auto)`` configuration: ``exchange`` on CPU, ``copy`` on CUDA,
what :class:`~lightning_dpo.ReferenceSwapCallback` picks by default. A ``weights only``
row (model built, no fit) gives the size of one copy of the weights in the same units.
On CUDA the peak allocated device memory (``torch.cuda.max_memory_allocated``) is
reported as well.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
from pathlib import Path

import torch
from _models import (
    add_threads_argument,
    build_llama,
    check_size,
    machine_info,
    markdown_table,
    set_threads,
    status_kib,
    trainable_nbytes,
)
from _training import (
    CACHE,
    CONFIGURATIONS,
    NOT_AVAILABLE,
    SWAP_COPY,
    SWAP_EXCHANGE,
    build_datamodule,
    build_module,
    build_trainer,
    cache_parameter,
    quiet,
    reference_callback,
)

WEIGHTS_ONLY = "weights only (no fit)"


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(name: str, size: str, steps: int, shape: tuple[int, int, int], device: str) -> dict:
    """Run one configuration in this (fresh) process and return its memory figures.

    ``shape`` is (tokens per row, pairs per batch, torch threads).
    """
    length, batch, threads = shape
    set_threads(threads)
    quiet()
    reset = reset_peak()
    baseline = status_kib("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        if name == WEIGHTS_ONLY:
            model = build_llama(size).to(device)
            weights = trainable_nbytes(model)
        else:
            datamodule = build_datamodule(Path(tmp), max(32, steps * batch), batch, length)
            module = build_module(name, size)
            weights = sum(p.numel() * p.element_size() for p in module.policy.parameters())
            callback = reference_callback(name, Path(tmp) / "reference-cache")
            accelerator = "gpu" if device == "cuda" else "cpu"
            build_trainer(steps, [callback], accelerator).fit(module, datamodule=datamodule)
    peak = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"peak": peak / 1024, "baseline": baseline / 1024, "cuda": cuda, "weights": weights}


def run_isolated(pool_context, *args) -> dict:
    """Run :func:`measure` in a new process of ``pool_context``."""
    with pool_context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(measure, args)


def skip_reason(name: str, device: str) -> str | None:
    """Why configuration ``name`` cannot run here, or ``None``."""
    if name == CACHE and cache_parameter() is None:
        return NOT_AVAILABLE
    if name == SWAP_EXCHANGE and device == "cuda":
        return "n/a on CUDA: exchange needs host parameters"
    return None


def table(results: dict[str, dict | str], base: str, device: str) -> str:
    """Markdown rows: MiB and ratios to the ``base`` configuration."""
    ref = results[base]
    assert isinstance(ref, dict)
    rows = []
    for name, result in results.items():
        if isinstance(result, str):
            rows.append([name, result, "", "", "", "", ""])
            continue
        above = result["peak"] - result["baseline"]
        ref_above = ref["peak"] - ref["baseline"]
        cuda = "" if result["cuda"] is None else f"{result['cuda']:.0f}"
        cuda_ratio = "" if result["cuda"] is None else f"{result['cuda'] / ref['cuda']:.2f}"
        rows.append(
            [
                name,
                f"{result['peak']:.0f}",
                f"{above:.0f}",
                f"{result['peak'] / ref['peak']:.2f}",
                f"{above / ref_above:.2f}",
                cuda,
                cuda_ratio,
            ]
        )
    headers = [
        "configuration",
        "peak RSS MiB",
        "above baseline MiB",
        "x swap (peak)",
        "x swap (above baseline)",
        f"CUDA peak MiB{'' if device == 'cuda' else ' (no CUDA)'}",
        "x swap (CUDA)",
    ]
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every configuration in its own process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100M", help="model size (see _models.SIZES)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per configuration")
    parser.add_argument("--length", type=int, default=64, help="tokens per row")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per batch")
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 steps (smoke)")
    args = parser.parse_args(argv)
    size = "tiny" if args.quick else check_size(args.size)
    steps = 2 if args.quick else args.steps
    device = "cuda" if torch.cuda.is_available() else "cpu"
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "lightning", "transformers", "peft", "_training"])
    results: dict[str, dict | str] = {}
    for name in (WEIGHTS_ONLY, *CONFIGURATIONS):
        reason = skip_reason(name, device)
        shape = args.length, args.batch_size, args.threads
        results[name] = reason or run_isolated(context, name, size, steps, shape, device)
    base = SWAP_COPY if device == "cuda" else SWAP_EXCHANGE
    weights = results[WEIGHTS_ONLY]["weights"] / 2**20  # type: ignore[index]
    print(f"# Peak memory of {steps} training steps, one process per configuration\n")
    set_threads(args.threads)
    print(f"Machine: {machine_info()}; device: {device}")
    print(
        f"Model {size}: {weights:.1f} MiB of fp32 weights; {args.batch_size} pairs x "
        f"{args.length} tokens per step; ratios to `{base}` (swap, auto mode)\n"
    )
    print(table(results, base, device))


if __name__ == "__main__":
    main()
