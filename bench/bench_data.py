"""Benchmark: load + validate + tokenise 10k preference pairs, against naive per-epoch tokenising.

Run: ``python bench/bench_data.py [--pairs 10000] [--epochs 3]``. Everything is measured in
this one run, side by side, and reported as records/s and ratios:

* ``naive, per epoch``: each epoch, every pair tokenised one text at a time in
  ``__getitem__`` (three tokenizer calls per pair), as a map-style dataset without a cache
  would; reading the file is not even counted.
* ``PreferenceDataModule.setup`` cold: read the JSONL, validate every record, encode in
  batches, store the encodings in the cache, truncate, index.
* ``PreferenceDataModule.setup`` warm: the same with the cache filled (a second run).

The tokenizer is a byte-level BPE (vocabulary 2,000, ``_text.train_bpe``) trained in-process
on the data.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from _text import train_bpe
from transformers import PreTrainedTokenizerFast

from lightning_dpo.data import DataSource, PreferenceDataModule, TokenSettings

WORDS = "the a model answer sort list number first second because then we should not is"


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS.split()) for _ in range(n))


def write_pairs(path: Path, n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = [
        {
            "prompt": f"Human: {sentence(rng, 30)} ({i})\n\nAssistant:",
            "chosen": " " + sentence(rng, 40),
            "rejected": " " + sentence(rng, 40),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def naive_epoch(rows: list[dict[str, str]], tok: PreTrainedTokenizerFast) -> None:
    for r in rows:  # what a __getitem__ that tokenises would do, every epoch
        for key in ("prompt", "chosen", "rejected"):
            tok(r[key], add_special_tokens=False)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        rows = write_pairs(data, args.pairs)
        tok = train_bpe((r["prompt"] + r["chosen"] for r in rows[:2000]), 2000)
        tokens = TokenSettings(max_length=256, cache_dir=str(Path(tmp) / "cache"))
        kwargs = {"tokenizer": tok, "source": DataSource(str(data)), "tokens": tokens}
        cold = timed(lambda: PreferenceDataModule(**kwargs).setup())
        warm = timed(lambda: PreferenceDataModule(**kwargs).setup())
        naive = timed(lambda: [naive_epoch(rows, tok) for _ in range(args.epochs)])
    n, e = args.pairs, args.epochs
    print(f"{n} pairs, {e} epochs (per-epoch work of the naive loader counted {e} times)\n")
    print(f"| {'method':<44} | {'seconds':>8} | {'records/s':>10} | {'vs naive':>8} |")
    print(f"| {'-' * 44} | {'-' * 8}:| {'-' * 10}:| {'-' * 8}:|")
    table = [
        (f"naive: tokenise in __getitem__, {e} epochs", naive),
        ("setup(): load+validate+tokenise, cold cache", cold),
        ("setup(): load+validate, warm cache (2nd run)", warm),
    ]
    for name, seconds in table:
        rate = n * (e if name.startswith("naive") else 1) / seconds
        print(f"| {name:<44} | {seconds:8.2f} | {rate:10,.0f} | {naive / seconds:7.1f}x |")


if __name__ == "__main__":
    main()
