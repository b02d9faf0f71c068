"""Benchmark: cost of one reference bracket (swap in + restore) in units of one memcpy.

Run: ``python bench/bench_swap.py [--sizes 1M,10M,100M] [--repeats N] [--quick]``.

For each model size (fp32 Llama, all parameters trainable) one bracket is timed with
an empty forward slot, for:

* ``naive``: the design of the best-known implementation, written here as a baseline:
  ``training = {k: v.clone() for k, v in model.state_dict().items()}`` (to host),
  ``model.load_state_dict(reference)``, forward slot, ``model.load_state_dict(training)``;
* ``copy``: :class:`~lightning_dpo.reference.HostSnapshotReference` with
  ``swap_mode="copy"`` (stash, load, restore through preallocated host buffers);
* ``exchange``: the same with ``swap_mode="exchange"`` (parameters trade ``.data`` with
  the snapshot; no bytes move; host parameters only);
* ``callback bracket``: ``reference_context`` around the ``"auto"`` snapshot, what
  :class:`~lightning_dpo.ReferenceSwapCallback` runs per reference forward (adds
  ``no_grad`` and the eval-mode switch of every submodule).

Each time is divided by the time of ONE memcpy of the trainable bytes
(``dst.copy_(src)`` of flat buffers of that size; on CUDA one pinned host-to-device
copy), timed in the same round: all methods and the memcpy run interleaved, and the
table gives the median over rounds of the per-round ratio, with median absolute
times, and the ratio of the best (minimum) times, which load from other processes can
only inflate. Before timing, every method is checked to really swap (reference weights
inside the bracket, training weights after). On CUDA a second table gives the copy mode's
bandwidth against pinned host-to-device peak.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

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
    trainable_nbytes,
    trainable_numel,
)
from torch import nn

from lightning_dpo.reference import HostSnapshotReference, SnapshotPlacement, reference_context

REPEATS = {"tiny": 20, "1M": 40, "10M": 15, "100M": 7}
"""Timed rounds per size (after one warm-up round)."""

Bracket = Callable[[], AbstractContextManager[None]]


@contextmanager
def naive_bracket(model: nn.Module, reference: dict[str, torch.Tensor]) -> Iterator[None]:
    """The baseline: clone the state dict to host, load the reference, load it back."""
    training = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.load_state_dict(reference)
    try:
        yield
    finally:
        model.load_state_dict(training)


def brackets(model: nn.Module, device: torch.device) -> dict[str, Bracket]:
    """The bracket of each method, over a reference equal to the model as it is now."""
    reference = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    copy = HostSnapshotReference.capture(model, SnapshotPlacement.decide(model, swap_mode="copy"))
    auto = HostSnapshotReference.capture(model, SnapshotPlacement.decide(model, swap_mode="auto"))
    found: dict[str, Bracket] = {
        "naive (clone + load_state_dict x2)": lambda: naive_bracket(model, reference),
        "HostSnapshotReference copy": lambda: copy.reference(model),
    }
    if device.type == "cpu":
        exchange = HostSnapshotReference.capture(
            model, SnapshotPlacement.decide(model, swap_mode="exchange")
        )
        found["HostSnapshotReference exchange"] = lambda: exchange.reference(model)
    found["callback bracket (auto + no_grad + eval)"] = lambda: reference_context(auto, model)
    return found


def check_swaps(model: nn.Module, found: dict[str, Bracket]) -> None:
    """Perturb the live weights, then check each bracket swaps the reference in and out.

    Raises:
        AssertionError: Naming the method that does not swap or does not restore.
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        reference = {name: p.detach().clone() for name, p in params.items()}
        for p in params.values():
            p.add_(1.0)
        training = {name: p.detach().clone() for name, p in params.items()}
    for method, bracket in found.items():
        with bracket():
            swapped = all(torch.equal(params[n], reference[n]) for n in params)
        restored = all(torch.equal(params[n], training[n]) for n in params)
        assert swapped and restored, f"{method}: swapped in {swapped}, restored {restored}"


def memcpy_fn(numel: int, device: torch.device) -> Callable[[], None]:
    """One copy of ``numel`` fp32 values: host to host, or pinned host to device."""
    src = torch.rand(numel, pin_memory=device.type == "cuda")
    dst = torch.empty(numel, device=device)

    def run() -> None:
        dst.copy_(src, non_blocking=device.type == "cuda")

    return run


def measure_size(size: str, repeats: int, device: torch.device) -> dict[str, object]:
    """Time every method against the memcpy at one model size."""
    model = build_llama(size).to(device)
    found = brackets(model, device)
    check_swaps(model, found)

    def timed(bracket: Bracket) -> Callable[[], None]:
        def run() -> None:
            with bracket():
                pass

        return run

    fns = {"memcpy": memcpy_fn(trainable_numel(model), device)}
    fns.update({name: timed(bracket) for name, bracket in found.items()})
    times = time_interleaved(fns, repeats, device)
    return {"params": trainable_numel(model), "nbytes": trainable_nbytes(model), "times": times}


def size_rows(size: str, result: dict[str, object]) -> list[list[str]]:
    """Table rows of one size: median ms, median per-round and best-of ratios to the memcpy."""
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    memcpy = times["memcpy"]
    label = f"{size} ({result['params'] / 1e6:.2f}M params, {mib(result['nbytes'])} MiB)"
    gbps = result["nbytes"] / median(memcpy) / 1e9  # type: ignore[operator]
    memcpy_ms = f"{median(memcpy) * 1e3:.3f}"
    rows = [[label, "one memcpy (the unit)", memcpy_ms, "1.00", "1.00", f"{gbps:.1f}"]]
    for name, values in times.items():
        if name == "memcpy":
            continue
        ratio = median([t / m for t, m in zip(values, memcpy, strict=True)])
        best = min(values) / min(memcpy)
        ms = f"{median(values) * 1e3:.3f}"
        rows.append([label, name, ms, f"{ratio:.2f}", f"{best:.2f}", ""])
    return rows


def cuda_bandwidth_table(result: dict[str, object]) -> str:
    """Copy-mode bandwidth (3 transfers per bracket) against pinned H2D and D2H peaks."""
    nbytes: int = result["nbytes"]  # type: ignore[assignment]
    numel = nbytes // 4
    pinned = torch.rand(numel, pin_memory=True)
    pageable = torch.rand(numel)
    device_buf = torch.empty(numel, device="cuda")
    device_dst = torch.empty(numel, device="cuda")
    fns = {
        "H2D pinned": lambda: device_buf.copy_(pinned, non_blocking=True),
        "D2H pinned": lambda: pinned.copy_(device_buf, non_blocking=True),
        "H2D pageable": lambda: device_buf.copy_(pageable),
        "D2D": lambda: device_dst.copy_(device_buf),
    }
    times = {k: median(v) for k, v in time_interleaved(fns, 10, "cuda").items()}
    copy_time = median(result["times"]["HostSnapshotReference copy"])  # type: ignore[index]
    rows = [[name, f"{nbytes / t / 1e9:.1f}", ""] for name, t in times.items()]
    peak = nbytes / times["H2D pinned"] / 1e9
    copy_gbps = 3 * nbytes / copy_time / 1e9
    rows.append(["copy-mode bracket (3 transfers)", f"{copy_gbps:.1f}", f"{copy_gbps / peak:.2f}"])
    return markdown_table(["transfer", "GB/s", "fraction of H2D pinned peak"], rows)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, measure every size, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M,100M", help="comma-separated model sizes")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per size")
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 rounds (smoke)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    sizes = ["tiny"] if args.quick else parse_sizes(args.sizes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unit = "pinned H2D copy" if device.type == "cuda" else "memcpy"
    print(f"# Reference bracket cost / one {unit} of the trainable bytes\n")
    print(f"Machine: {machine_info()}; device: {device}\n")
    rows, last = [], None
    for size in sizes:
        repeats = 3 if args.quick else args.repeats or REPEATS[size]
        last = measure_size(size, repeats, device)
        rows += size_rows(size, last)
    headers = [
        "model",
        "method",
        "ms per bracket (median)",
        f"x one {unit} (median of rounds)",
        "x (best of rounds)",
        "memcpy GB/s",
    ]
    print(markdown_table(headers, rows))
    if device.type == "cuda" and last is not None:
        print(f"\n## CUDA bandwidth at size {sizes[-1]}\n")
        print(cuda_bandwidth_table(last))


if __name__ == "__main__":
    main()
