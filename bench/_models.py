"""Shared helpers of the benchmarks: Llama models by size, machine info, timing, tables.

Not a benchmark itself. The bench scripts import it as a sibling module (``bench/`` is on
``sys.path`` when a script runs as ``python bench/<script>.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "vocab_size": 256,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
    "1M": {
        "vocab_size": 2048,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "10M": {
        "vocab_size": 8192,
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
    },
    "50M": {
        "vocab_size": 8192,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 10,
        "num_attention_heads": 9,
    },
    "100M": {
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 12,
    },
    "135M": {
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "tie_word_embeddings": True,
    },
}
"""``LlamaConfig`` fields of each size (names are rounded counts).

``tiny`` (~30k parameters) is for ``--quick`` smoke runs; ``100M`` has Llama-2's
32,000-token vocabulary, whose embeddings are half of its 106M parameters. ``135M`` is
SmolLM2-135M's shape (grouped-query attention, embeddings tied to the LM head: 134.5M
parameters). Unless a size says otherwise, embeddings are untied and every attention head
has its own keys and values.
"""


def check_size(name: str) -> str:
    """Return ``name`` if it is a known size.

    Raises:
        ValueError: Naming the valid sizes.
    """
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; valid sizes: {', '.join(SIZES)}")
    return name


def parse_sizes(text: str) -> list[str]:
    """Comma-separated size names (``"1M,10M"``), each checked."""
    return [check_size(name.strip()) for name in text.split(",") if name.strip()]


def build_llama(
    size: str,
    seed: int = 0,
    pad_token_id: int = 0,
    max_positions: int = 512,
    vocab_size: int | None = None,
) -> LlamaForCausalLM:
    """A randomly initialised fp32 Llama of a named size (see :data:`SIZES`).

    Args:
        size: A key of :data:`SIZES`.
        seed: Seed of the initialisation.
        pad_token_id: Padding id (the character tokenizer's ``<pad>`` is 0).
        max_positions: ``max_position_embeddings``.
        vocab_size: Instead of the size's vocabulary (e.g. a tokenizer's length).
    """
    fields = dict(SIZES[check_size(size)])
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    fields.setdefault("num_key_value_heads", fields["num_attention_heads"])
    fields.setdefault("tie_word_embeddings", False)
    config = LlamaConfig(
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        **fields,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def trainable_numel(model: nn.Module) -> int:
    """Number of elements of the parameters that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_nbytes(model: nn.Module) -> int:
    """Bytes of the parameters that require grad."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def machine_info() -> str:
    """One line: torch version, threads, CPUs, CUDA device, and the load average now.

    The load average says how much other work shared the CPUs while this ran.
    """
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"{os.cpu_count()} CPUs ({cpu}), CUDA device: {gpu}, "
        f"1-min load average {os.getloadavg()[0]:.1f}"
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` (torch intra-op threads, default 1) to a benchmark's parser.

    One thread by default: on a machine shared with other jobs, OpenMP's spinning worker
    threads turn every parallel region into a wait for a descheduled thread (measured on
    2 cores at load 3: 2.6 s of CPU per training step of the 1M model with 2 threads,
    0.05 s with 1), which no median can repair.
    """
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in this benchmark process.

    Raises:
        ValueError: ``threads`` is not positive.
    """
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    device: torch.device | str = "cpu",
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, interleaved, in seconds.

    Each repeat runs every function once, starting one further along the list each
    time, so a burst of load from other processes hits all of them alike. ``warmup``
    untimed rounds come first.

    Returns:
        The list of times of each function, by name.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table of ``rows`` under ``headers``."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def status_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB: ``VmRSS`` (resident now) or ``VmHWM`` (peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mib(nbytes: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{nbytes / 2**20:.1f}"
