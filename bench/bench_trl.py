"""Benchmark: this package against TRL's ``DPOTrainer`` on the same model, data, batches, steps.

Run (TRL comes with the benchmark extra, never with the package)::

    pip install -e ".[bench]"
    python bench/bench_trl.py --data ../shared/data/hh_harmless_dev.jsonl.gz [--size 10M]
        [--steps 6] [--rounds 2] [--batch-size 8]

The same work on both sides:

- **model**: one random Llama of ``--size`` saved with ``save_pretrained``; every run loads
  it from that directory (TRL builds its reference model from the same path);
- **data**: a BPE of the model's vocabulary trained on the file's text; the file goes
  through :class:`~lightning_dpo.PreferenceDataModule` (``max_length=1024``, no pair cut),
  and TRL gets each pair back as text (prompt, chosen, rejected). The script checks that
  TRL's own tokenisation gives exactly the same token ids for every pair it uses;
- **batches and steps**: the pairs in dataset order, ``--batch-size`` per step, no shuffling
  on either side (TRL's sampler is made sequential), ``--steps`` steps per run;
- **optimisation**: DPO (sigmoid, beta 0.1), AdamW (lr 1e-5, no weight decay), constant
  learning rate, no gradient clipping, fp32, dropout off, one CPU thread.

Each round runs TRL and each of this package's configurations from the same initial
weights, in a rotating order. Reported: pairs/s over the timed steps (all but the first
two of a run), the ratio to TRL, and the largest difference of the per-step training loss
from TRL's over the run (the check that both trained the same way).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _models import add_threads_argument, build_llama, machine_info, markdown_table, set_threads
from _text import record_texts, train_bpe
from _training import build_trainer, quiet
from lightning.pytorch.callbacks import Callback
from transformers import AutoModelForCausalLM, TrainerCallback

from lightning_dpo import PreferenceDataModule, PreferenceLoss, PreferenceModule
from lightning_dpo.data.batch_plan import BatchPlan
from lightning_dpo.data.collate import collate_pairs
from lightning_dpo.data.tokenization import TokenizedPair
from lightning_dpo.data.windows import PlannedDataLoader
from lightning_dpo.reference import ReferenceSwapCallback

MAX_LENGTH = 1024
OURS = {
    "lightning-dpo: padded, model logits": {"layout": "padded", "response_head": False},
    "lightning-dpo: packed (default)": {"layout": "packed", "response_head": True},
}
TRL = "TRL 1.16 DPOTrainer"


class StepClock:
    """Per-step wall times and losses of one run (the first two steps not timed)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.losses: list[float] = []

    def tick(self) -> None:
        """A step begins."""
        self.starts.append(time.perf_counter())

    def rate(self, batch_size: int) -> float:
        """Pairs per second between the third step's start and the last step's start."""
        timed = self.starts[2:]
        return batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


class LightningClock(Callback):
    """A :class:`StepClock` fed by Lightning's hooks."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.clock.tick()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.clock.losses.append(float(outputs["loss"]))  # 1 micro-batch: the batch mean


class TrlClock(TrainerCallback):
    """A :class:`StepClock` fed by the Hugging Face Trainer's callbacks."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.clock.tick()

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        if logs and "loss" in logs:
            self.clock.losses.append(float(logs["loss"]))


def pair_texts(pair: TokenizedPair, tokenizer: Any) -> dict[str, str]:
    """A pair as TRL's explicit-format text record (BOS and EOS are TRL's to add)."""
    prompt = (
        pair.prompt_ids[1:] if pair.prompt_ids[:1] == (tokenizer.bos_token_id,) else pair.prompt_ids
    )

    def text(ids: tuple[int, ...]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=False)

    return {
        "prompt": text(prompt),
        "chosen": text(pair.chosen_ids[:-1]),
        "rejected": text(pair.rejected_ids[:-1]),
    }


def trl_trainer(model_dir: Path, tokenizer, pairs: list[TokenizedPair], args, clock: StepClock):
    """TRL's DPOTrainer on ``pairs`` in order (a sequential sampler), timed by ``clock``."""
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from trl import DPOConfig, DPOTrainer

    class InOrder(DPOTrainer):
        def _get_train_sampler(self, *unused: Any) -> SequentialSampler:
            return SequentialSampler(self.train_dataset)

    config = DPOConfig(
        output_dir=str(model_dir / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-5,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        beta=0.1,
        max_length=None,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # TRL's default is bf16 mixed precision; both sides run fp32 here
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    dataset = Dataset.from_list([pair_texts(pair, tokenizer) for pair in pairs])
    trainer = InOrder(
        model=str(model_dir), args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.add_callback(TrlClock(clock))
    prepared = trainer.train_dataset
    for index, (pair, row) in enumerate(zip(pairs, prepared, strict=True)):
        ours = (list(pair.prompt_ids), list(pair.chosen_ids), list(pair.rejected_ids))
        if ours != (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]):
            raise AssertionError(f"pair {index}: TRL tokenised it differently")
    return trainer


def run_ours(model_dir: Path, pairs, tokenizer, args, options: dict, clock: StepClock) -> None:
    """This package on ``pairs`` in order, from the saved model."""
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    module = PreferenceModule(
        policy,
        PreferenceLoss("dpo", beta=0.1),
        partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.0),
        response_head=options["response_head"],
    )
    plan = BatchPlan([1] * len(pairs), batch_size=args.batch_size)
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id, layout=options["layout"])
    loader = PlannedDataLoader(pairs, plan, collate)
    trainer = build_trainer(args.steps, [LightningClock(clock), ReferenceSwapCallback()], "cpu")
    trainer.fit(module, train_dataloaders=loader)


def measure(args: argparse.Namespace, directory: Path) -> tuple[list[list[str]], int]:
    """The interleaved rounds; the table's rows and the number of pairs used."""
    tokenizer = train_bpe(record_texts(args.data), 8192)
    data = PreferenceDataModule(
        tokenizer=tokenizer, train_file=args.data, max_length=MAX_LENGTH, layout="padded"
    )
    data.setup()
    pairs = data.train_pairs[: args.batch_size * args.steps]
    model_dir = directory / "model"
    build_llama(args.size, vocab_size=len(tokenizer), max_positions=MAX_LENGTH).save_pretrained(
        model_dir
    )
    tokenizer.save_pretrained(model_dir)
    clocks: dict[str, list[StepClock]] = {name: [] for name in [TRL, *OURS]}
    names = list(clocks)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            clock = StepClock()
            if name == TRL:
                trl_trainer(model_dir, tokenizer, pairs, args, clock).train()
            else:
                run_ours(model_dir, pairs, tokenizer, args, OURS[name], clock)
            clocks[name].append(clock)
    return table_rows(clocks, args.batch_size), len(pairs)


def table_rows(clocks: dict[str, list[StepClock]], batch_size: int) -> list[list[str]]:
    """pairs/s (median over rounds), x TRL, and the largest loss difference from TRL's."""
    rates = {
        name: sorted(clock.rate(batch_size) for clock in runs)[len(runs) // 2]
        for name, runs in clocks.items()
    }
    reference = clocks[TRL][0].losses
    rows = []
    for name, runs in clocks.items():
        difference = max(
            abs(a - b) for run in runs for a, b in zip(run.losses, reference, strict=True)
        )
        if not math.isclose(runs[0].losses[0], math.log(2), abs_tol=1e-5):
            raise AssertionError(f"{name}: step-0 loss {runs[0].losses[0]}, not ln 2")
        rows.append(
            [name, f"{rates[name]:.2f}", f"{rates[name] / rates[TRL]:.2f}", f"{difference:.1e}"]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preference data file")
    parser.add_argument("--size", default="10M", help="model size (bench/_models.py)")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (2 untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.steps < 4:
        raise ValueError(f"--steps must be >= 4 (2 untimed, 2 timed), got {args.steps}")
    set_threads(args.threads)
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        rows, pairs = measure(args, Path(tmp))
    print("# lightning-dpo against TRL's DPOTrainer, same model, data, batches and steps\n")
    print(f"Machine: {machine_info()}")
    print(
        f"Model {args.size}; {pairs} pairs of {args.data} in order, {args.batch_size} per step, "
        f"{args.steps} steps x {args.rounds} rounds; identical token ids checked\n"
    )
    headers = ["trainer", "pairs/s", "x TRL", "max |loss - TRL loss| per step"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
