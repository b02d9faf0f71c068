r"""Benchmark: what verifying each store costs against loading it, on a real data file.

Run::

    python bench/bench_store_verify.py --data ../shared/data/hh_harmless_dev.jsonl.gz \\
        [--gguf SmolLM2-135M-Instruct.Q4_1.gguf] [--repeats 5] [--quick]

The stores as a run finds them, built once from ``--data`` (tokenised with the model's
tokenizer through its chat template with ``--gguf``, else with the byte tokenizer):

- **token cache**: the train split's entry under ``data.tokens.cache_dir``; *check*: the xxh3 of
  each of its files against its manifest (a run then loads it), *load*:
  ``datasets.load_from_disk`` and the conversion to lists that a run does;
- **reference table**: a ``[N, 2]`` table of the train split's size; *check*: the verified
  load (``torch.load`` and the fingerprint of its values), *load*: ``torch.load`` alone;
- **checkpoint pre-flight** (``train.py``'s check of ``ckpt_path``); *check*: the zip
  directory and the pickle read memory-mapped, *load*: the ``torch.load`` of the whole
  checkpoint Lightning then does (a random Llama of ``--size`` with AdamW's state).

Timed interleaved in one process; the median of ``--repeats`` rounds, and the ratio
check / load.
"""

from __future__ import annotations

import argparse
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
    set_threads,
    time_interleaved,
)
from datasets import load_from_disk

from lightning_dpo import PreferenceDataModule
from lightning_dpo.checkpoint_checks import check_checkpoint_file
from lightning_dpo.data import DataSource, RecordSettings, TokenSettings
from lightning_dpo.data.tokens import cache as token_cache
from lightning_dpo.integrity import directory_problem
from lightning_dpo.reference.cache.store import ReferenceLogpsCache, read_verified_table


def token_store(args: argparse.Namespace, directory: Path) -> Path:
    """Build the data's token cache under ``directory``; its train entry (the larger)."""
    tokenizer = None
    if args.gguf:
        from lightning_dpo.pretrained import resolve_pretrained

        tokenizer = resolve_pretrained(args.gguf).load_tokenizer()
    data = PreferenceDataModule(
        tokenizer,
        DataSource(args.data),
        RecordSettings(chat_template=bool(args.gguf)),
        TokenSettings(max_length=1024, cache_dir=str(directory)),
    )
    data.setup()
    return max(
        directory.glob("encodings-*"), key=lambda p: sum(f.stat().st_size for f in p.iterdir())
    )


def checkpoint_file(size: str, directory: Path) -> Path:
    """A checkpoint as a run writes it: weights and AdamW's two moments, fp32."""
    model = build_llama(size)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).logits.sum().backward()
    optimizer.step()
    path = directory / "run.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}, path
    )
    return path


def row(name: str, nbytes: int, times: dict[str, list[float]]) -> list[str]:
    verify, load = median(times["verify"]), median(times["load"])
    return [name, mib(nbytes), f"{verify * 1e3:.1f}", f"{load * 1e3:.1f}", f"{verify / load:.2f}"]


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preference data file")
    parser.add_argument("--gguf", help="the model whose tokenizer and chat template to use")
    parser.add_argument("--size", default="100M", help="the checkpoint's model size")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="tiny checkpoint, 1 round")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    size, repeats = ("tiny", 1) if args.quick else (args.size, args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        entry = token_store(args, directory / "tokens")
        times = time_interleaved(
            {
                "verify": lambda: directory_problem(entry, token_cache.MANIFEST),
                "load": lambda: load_from_disk(str(entry)).to_dict(),
            },
            repeats,
        )
        nbytes = sum(f.stat().st_size for f in entry.iterdir())
        rows.append(row("token cache (train split)", nbytes, times))
        store = ReferenceLogpsCache(directory / "reference")
        pairs = len(load_from_disk(str(entry)))
        table_path = store.save("train", torch.randn(pairs, 2))
        stored = torch.load(table_path, weights_only=True)
        times = time_interleaved(
            {
                "verify": lambda: read_verified_table(table_path),
                "load": lambda: torch.load(table_path, weights_only=True),
            },
            repeats,
        )
        rows.append(
            row(f"reference table ({len(stored['table'])} pairs)", table_path.stat().st_size, times)
        )
        checkpoint = checkpoint_file(size, directory)
        times = time_interleaved(
            {
                "verify": lambda: check_checkpoint_file(checkpoint),
                "load": lambda: torch.load(checkpoint, map_location="cpu", weights_only=False),
            },
            repeats,
        )
        rows.append(row(f"checkpoint pre-flight ({size})", checkpoint.stat().st_size, times))
    headers = ["store", "MiB", "check ms", "load ms", "check / load"]
    print(markdown_table(headers, rows))
    print(f"\nmedian of {repeats} interleaved rounds; {machine_info()}")


if __name__ == "__main__":
    main()
