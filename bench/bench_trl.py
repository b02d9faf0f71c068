"""Benchmark: this package against TRL's ``DPOTrainer`` on the same model, data, batches, steps.

Run (TRL comes with the benchmark extra, never with the package)::

    pip install -e ".[bench]"
    python bench/bench_trl.py --data ../shared/data/hh_harmless_dev.jsonl.gz [--size 135M]
        [--gguf FILE] [--steps 6] [--rounds 1] [--batch-size 8] [--threads 2] [--out table.md]
        [--systems all|off|NAME,...]

The same work on both sides:

- **model**: one random Llama of ``--size`` (``135M``: SmolLM2-135M's shape) saved with
  ``save_pretrained``; every run loads it from that directory. With ``--gguf`` (for
  example SmolLM2-135M-Instruct's, see README "Align a real model") the real model
  instead: its GGUF file converted once by :func:`~lightning_dpo.pretrained.resolve_pretrained`
  (dequantised to float32, with its tokenizer and chat template) into the directory both
  sides load;
- **data**: a BPE of 8,192 tokens trained on the file's text (the model keeps its size's
  vocabulary, so the LM head costs what it costs in the real model), or with ``--gguf``
  the model's own tokenizer with every conversation rendered through its chat template
  (``chat_template=True``, as ``data.records.chat_template=true`` in ``train.py``); the file goes
  through :class:`~lightning_dpo.PreferenceDataModule` (``max_length=1024``, no pair cut),
  and TRL gets each pair back as text (prompt, chosen, rejected). The script checks that
  TRL's own tokenisation gives exactly the same token ids for every pair it uses;
- **batches and steps**: the pairs in dataset order, ``--batch-size`` per step, no shuffling
  on either side (TRL's sampler is made sequential), ``--steps`` steps per run;
- **optimisation**: DPO (sigmoid, beta 0.1), fused AdamW (lr 1e-5, no weight decay; the
  Hugging Face Trainer's default and this package's), constant learning rate, no gradient
  clipping, fp32, dropout off;
- **LoRA** (r 16, alpha 32, dropout 0, all linear layers): TRL gets a ``peft_config``,
  this package ``model.lora``; both then load the same initial adapter weights (checked:
  they hash the same); the reference is the base model with the adapters disabled on both
  sides;
- **activation checkpointing**: off on both sides, or on on both sides (non-reentrant
  ``torch.utils.checkpoint`` per decoder layer; TRL 1.16 turns it on by default).

Each system runs in a process of its own, so that its peak RSS is its own. Reported per
system, each ratio against TRL's row of the same group (full or LoRA, checkpointing off or
on): pairs/s over the timed steps (all but the first two), peak RSS, the fixed part of
memory (weights, gradients, AdamW's moments, the reference: computed, the same on both
sides), what the step adds on top (peak RSS minus the process's RSS before the model
loaded minus the fixed part: activations and transients), positions computed per unique
token of the pairs, model FLOPs utilisation, and the largest per-step loss difference from
TRL's (the check that both trained the same way).

**Model FLOPs utilisation**: the useful work of a step over its time, against the dense
fp32 matmul rate measured in this run. Useful work: ``8 N T`` for full training (``6 N T``
for the policy's forward and backward, ``2 N T`` for the reference forward), ``6 N T``
under LoRA (the base weights get no gradient, so the backward is ``2 N T``); ``N`` the
model's parameters (the tied embedding counted once, as the LM head's matmul), ``T`` the
unique tokens of the step's pairs (each prompt once). Positions computed twice (a prompt
in both rows of a padded pair), padding, attention and elementwise work are not useful
work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _models import (
    SIZES,
    add_threads_argument,
    build_llama,
    machine_info,
    markdown_table,
    set_threads,
    status_kib,
)
from _text import record_texts, train_bpe
from _training import build_trainer, quiet
from lightning.pytorch.callbacks import Callback
from transformers import AutoTokenizer, TrainerCallback

from lightning_dpo import PreferenceDataModule, PreferenceLoss, PreferenceModule, build_policy
from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.data.batches.plan import BatchPlan
from lightning_dpo.data.batches.windows import PlannedDataLoader
from lightning_dpo.data.records.conversations import dialogue_pair
from lightning_dpo.data.records.formats import FormatOptions, implicit_texts
from lightning_dpo.data.records.rows import read_rows
from lightning_dpo.data.settings import BatchSettings, DataSource, RecordSettings, TokenSettings
from lightning_dpo.layouts.rows import lay_out, pair_tokens
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.pretrained import resolve_pretrained
from lightning_dpo.reference import ReferenceSwapCallback

MAX_LENGTH = 1024
BPE_VOCABULARY = 8192
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
TRL = "TRL 1.16 DPOTrainer"
DEFAULT = "lightning-dpo default (packed rows, response-only head)"
PADDED = "lightning-dpo, padded rows + model logits"


@dataclass(frozen=True)
class System:
    """One trainer configuration of the table.

    Attributes:
        trainer: ``"trl"`` or ``"ours"``.
        label: Its name within its group.
        lora: LoRA adapters (else full-parameter training).
        checkpointing: Activation checkpointing.
        layout: This package's batch layout.
        response_head: This package's response-only LM head.
    """

    trainer: str
    label: str
    lora: bool = False
    checkpointing: bool = False
    layout: str = "packed"
    response_head: bool = True

    @property
    def group(self) -> str:
        """Full or LoRA, checkpointing off or on: the rows compared with one TRL row."""
        return ("LoRA" if self.lora else "full") + (", checkpointing" if self.checkpointing else "")

    @property
    def name(self) -> str:
        """Group and label."""
        return f"{self.group}: {self.label}"

    @property
    def key(self) -> str:
        """A short name for ``--systems`` (``trl-full``, ``ours-lora-ckpt``, ...)."""
        parts = [self.trainer, "lora" if self.lora else "full"]
        parts += ["padded"] if self.layout == "padded" else []
        parts += ["ckpt"] if self.checkpointing else []
        return "-".join(parts)


def all_systems() -> list[System]:
    """The table's rows: full and LoRA, checkpointing off and on, TRL first in each group."""
    systems = []
    for checkpointing in (False, True):
        for lora in (False, True):
            both = {"lora": lora, "checkpointing": checkpointing}
            systems += [System("trl", TRL, **both), System("ours", DEFAULT, **both)]
            if not lora and not checkpointing:
                systems.append(System("ours", PADDED, **both, layout="padded", response_head=False))
    return systems


def select_systems(text: str) -> list[System]:
    """``all``, ``off`` (checkpointing off only) or comma-separated keys (:attr:`System.key`).

    Raises:
        ValueError: Naming the valid keys.
    """
    systems = all_systems()
    if text == "all":
        return systems
    if text == "off":
        return [system for system in systems if not system.checkpointing]
    keys = {system.key: system for system in systems}
    wanted = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in keys]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; valid: all, off, {', '.join(keys)}")
    return [keys[key] for key in wanted]


class StepClock:
    """Per-step wall times and losses of one run (the first two steps not timed)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.losses: list[float] = []


class LightningClock(Callback):
    """A :class:`StepClock` fed by Lightning's hooks."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.clock.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.clock.ends.append(time.perf_counter())
        self.clock.losses.append(float(outputs["loss"]))  # 1 micro-batch: the batch mean


class TrlClock(TrainerCallback):
    """A :class:`StepClock` fed by the Hugging Face Trainer's callbacks."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.clock.starts.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        self.clock.ends.append(time.perf_counter())

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


def pair_conversations(pairs: list[TokenizedPair], path: str) -> list[dict[str, list]]:
    """The pairs as TRL's conversational records, for a chat model (``--gguf``).

    Each pair's hh-rlhf line of ``path`` parsed into ``{role, content}`` messages (prompt,
    chosen turn, rejected turn): TRL renders them with the tokenizer's chat template itself,
    as its users give conversational data.
    """
    rows = {row.line: row.value for row in read_rows(path)}
    records = []
    for pair in pairs:
        texts = implicit_texts(rows[pair.line], FormatOptions())
        conversation = dialogue_pair(*texts)
        records.append(
            {
                "prompt": conversation.prompt,
                "chosen": conversation.chosen,
                "rejected": conversation.rejected,
            }
        )
    return records


def adapter_hash(model: torch.nn.Module) -> str | None:
    """A hash of the LoRA adapters' weights by name (``None`` without adapters)."""
    digest = hashlib.sha256()
    found = False
    for name, parameter in sorted(model.named_parameters()):
        if "lora_" in name:
            found = True
            digest.update(name.split("lora_", 1)[1].encode())
            digest.update(parameter.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16] if found else None


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA adapters' weights by parameter name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def load_adapters(model: torch.nn.Module, directory: Path) -> None:
    """Set ``model``'s adapters to the initial weights :func:`prepare` saved in ``directory``."""
    saved = torch.load(directory / "adapters.pt")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, weight in saved.items():
            parameters[name].copy_(weight)


def model_directory(args: argparse.Namespace, directory: Path) -> Path:
    """The directory both sides load: the converted ``--gguf`` file, else the saved random model."""
    return resolve_pretrained(args.gguf).directory if args.gguf else directory / "model"


def run_trl(system: System, directory: Path, pairs, args, clock: StepClock) -> str | None:
    """TRL's DPOTrainer on ``pairs`` in order (a sequential sampler), timed by ``clock``."""
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from trl import DPOConfig, DPOTrainer

    class InOrder(DPOTrainer):
        def _get_train_sampler(self, *unused: Any) -> SequentialSampler:
            return SequentialSampler(self.train_dataset)

    config = DPOConfig(
        output_dir=str(directory / "trl"),
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
        gradient_checkpointing=system.checkpointing,  # TRL 1.16's default is True
        gradient_checkpointing_kwargs={"use_reentrant": False} if system.checkpointing else None,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    model_dir = model_directory(args, directory)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if args.gguf:  # a chat model: conversations, rendered by TRL through the chat template
        records = pair_conversations(pairs, args.data)
    else:
        records = [pair_texts(pair, tokenizer) for pair in pairs]
    dataset = Dataset.from_list(records)
    trainer = InOrder(
        model=str(model_dir),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA) if system.lora else None,
    )
    if system.lora:
        load_adapters(trainer.model, directory)
    trainer.add_callback(TrlClock(clock))
    for index, (pair, row) in enumerate(zip(pairs, trainer.train_dataset, strict=True)):
        ours = (list(pair.prompt_ids), list(pair.chosen_ids), list(pair.rejected_ids))
        if ours != (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]):
            raise AssertionError(f"pair {index}: TRL tokenised it differently")
    initial = adapter_hash(trainer.model)
    trainer.train()
    return initial


def run_ours(system: System, directory: Path, pairs, args, clock: StepClock) -> str | None:
    """This package on ``pairs`` in order, from the saved model, as ``build_policy`` builds it."""
    model_dir = model_directory(args, directory)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = build_policy(
        tokenizer,
        pretrained=str(model_dir),
        lora=dict(LORA) if system.lora else None,
        activation_checkpointing=system.checkpointing,
    )
    if system.lora:
        load_adapters(model, directory)
    module = PreferenceModule(
        model,
        PreferenceLoss("dpo", beta=0.1),
        partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.0, fused=True),
        response_head=system.response_head,
    )
    plan = BatchPlan([1] * len(pairs), batch_size=args.batch_size)
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id, layout=system.layout)
    loader = PlannedDataLoader(pairs, plan, collate)
    trainer = build_trainer(args.steps, [LightningClock(clock), ReferenceSwapCallback()], "cpu")
    module.plan_scoring(system.layout)  # its own loader: the module is told the layout
    initial = adapter_hash(model)
    trainer.fit(module, train_dataloaders=loader)
    return initial


def worker(system: System, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``system`` in this process: its clock, adapters and memory.

    The baseline RSS is taken after the side's own libraries are imported (TRL's needs
    ``trl`` and ``datasets``), before the model loads.
    """
    if system.trainer == "trl":
        import datasets  # noqa: F401
        import trl  # noqa: F401
    pairs = pickle.loads((directory / "pairs.pkl").read_bytes())
    baseline = status_kib("VmRSS") * 1024
    clock = StepClock()
    run = run_trl if system.trainer == "trl" else run_ours
    initial = run(system, directory, pairs, args, clock)
    return {
        "starts": clock.starts,
        "ends": clock.ends,
        "losses": clock.losses,
        "adapter_hash": initial,
        "baseline_rss": baseline,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def matmul_rate(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """The best fp32 FLOP/s of ``size``-square matmuls with ``threads`` threads."""
    set_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def fixed_bytes(system: System, parameters: int, adapters: int) -> int:
    """Weights, gradients, AdamW's two moments and the reference, fp32, in bytes.

    Full: 4 copies of the weights plus the reference (this package's host snapshot, TRL's
    second model): 5 N. LoRA: the frozen base once, the adapters 4 times, no reference copy.
    """
    if system.lora:
        return 4 * (parameters + 4 * adapters)
    return 4 * 5 * parameters


def computed_positions(system: System, batch: list[TokenizedPair], pad_token_id: int) -> int:
    """Positions a forward of ``batch`` computes (rows x width) under ``system``'s layout.

    TRL, like the padded layout, puts each pair's prompt in both its rows and pads to the
    batch's longest row.
    """
    layout = "padded" if system.trainer == "trl" else system.layout
    return lay_out(batch, pad_token_id, layout)["input_ids"].numel()


@dataclass
class Measured:
    """The figures of one system (medians over rounds where timed)."""

    rate: float
    peak_rss: int
    baseline_rss: int
    losses: list[float]
    adapter_hash: str | None
    mfu: float
    positions_per_token: float


def summarise(system: System, runs: list[dict], context: dict) -> Measured:
    """Pairs/s, memory, FLOPs utilisation and positions per token of ``system``'s runs."""
    pairs, steps, batch_size = context["pairs"], context["steps"], context["batch_size"]
    batches = [pairs[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    timed = batches[2:]
    tokens = sum(pair_tokens(pair) for batch in timed for pair in batch)
    positions = sum(computed_positions(system, batch, context["pad"]) for batch in timed)
    # from the third step's start to the last step's end; the median over rounds
    seconds = sorted(run["ends"][-1] - run["starts"][2] for run in runs)[len(runs) // 2]
    factor = 6 if system.lora else 8
    return Measured(
        rate=batch_size * len(timed) / seconds,
        peak_rss=max(run["peak_rss"] for run in runs),
        baseline_rss=min(run["baseline_rss"] for run in runs),
        losses=runs[0]["losses"],
        adapter_hash=runs[0]["adapter_hash"],
        mfu=factor * context["parameters"] * tokens / seconds / context["peak_flops"],
        positions_per_token=positions / tokens,
    )


def table(measured: dict[System, Measured], context: dict) -> str:
    """The Markdown table of what is measured so far (ratios against the group's TRL row)."""
    trl = {system.group: figures for system, figures in measured.items() if system.trainer == "trl"}

    def ratio(value: float, reference: float | None) -> str:
        return f"{value / reference:.2f}" if reference else "—"

    rows = []
    for system, figures in measured.items():
        base = trl.get(system.group)
        fixed = fixed_bytes(system, context["parameters"], context["adapters"])
        added = figures.peak_rss - figures.baseline_rss - fixed
        base_added = base.peak_rss - base.baseline_rss - fixed if base else None
        difference = (
            f"{max(abs(a - b) for a, b in zip(figures.losses, base.losses, strict=True)):.1e}"
            if base
            else "—"
        )
        rows.append(
            [
                system.name,
                f"{figures.rate:.3f}",
                ratio(figures.rate, base.rate if base else None),
                f"{figures.peak_rss / 2**20:,.0f}",
                ratio(figures.peak_rss, base.peak_rss if base else None),
                f"{fixed / 2**20:,.0f}",
                f"{added / 2**20:,.0f}",
                ratio(added, base_added),
                f"{figures.positions_per_token:.2f}",
                f"{100 * figures.mfu:.1f}%",
                difference,
            ]
        )
    headers = [
        "system",
        "pairs/s",
        "x TRL",
        "peak RSS MiB",
        "x TRL",
        "fixed MiB",
        "step adds MiB",
        "x TRL",
        "positions / token",
        "MFU",
        "max |loss - TRL|",
    ]
    return markdown_table(headers, rows)


def check_runs(measured: dict[System, Measured]) -> list[str]:
    """Step-0 losses of ln 2, and identical initial adapters within each LoRA group."""
    notes = []
    for system, figures in measured.items():
        if not math.isclose(figures.losses[0], math.log(2), abs_tol=1e-5):
            raise AssertionError(f"{system.name}: step-0 loss {figures.losses[0]}, not ln 2")
    for group in {system.group for system in measured if system.lora}:
        hashes = {figures.adapter_hash for s, figures in measured.items() if s.group == group}
        verdict = "identical" if len(hashes) == 1 else f"DIFFERENT ({sorted(hashes)})"
        notes.append(f"{group}: initial adapter weights on every side {verdict}")
    return notes


def prepare(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Tokenise the data, save the model and the pairs; the context every row needs."""
    if args.gguf:
        pretrained = resolve_pretrained(args.gguf)
        tokenizer, model = pretrained.load_tokenizer(), pretrained.load_model()
    else:
        tokenizer = train_bpe(record_texts(args.data), BPE_VOCABULARY)
        vocabulary = max(len(tokenizer), SIZES[args.size]["vocab_size"])
        model = build_llama(args.size, vocab_size=vocabulary, max_positions=MAX_LENGTH)
        model.save_pretrained(directory / "model")
        tokenizer.save_pretrained(directory / "model")
    data = PreferenceDataModule(
        tokenizer=tokenizer,
        source=DataSource(train_file=args.data),
        tokens=TokenSettings(max_length=MAX_LENGTH),
        batches=BatchSettings(layout="padded"),
        records=RecordSettings(chat_template=bool(args.gguf)),
    )
    data.setup()
    pairs = data.train_pairs[: args.batch_size * args.steps]
    (directory / "pairs.pkl").write_bytes(pickle.dumps(pairs))
    from peft import LoraConfig, get_peft_model

    parameters = sum(p.numel() for p in model.parameters())
    initial = adapter_weights(get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA)))
    torch.save(initial, directory / "adapters.pt")
    adapters = sum(weight.numel() for weight in initial.values())
    return {
        "pairs": pairs,
        "pad": tokenizer.pad_token_id,
        "parameters": parameters,
        "adapters": adapters,
        "steps": args.steps,
        "batch_size": args.batch_size,
    }


def spawn(system: System, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``system`` in a fresh process; its figures."""
    result = directory / "result.json"
    command = [sys.executable, __file__, "--data", str(args.data), "--size", args.size]
    command += ["--gguf", str(args.gguf)] if args.gguf else []
    command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--worker", system.key, "--workdir", str(directory)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=env)
    return json.loads(result.read_text())


def measure(args: argparse.Namespace, directory: Path, systems: list[System]) -> None:
    """The interleaved rounds, the table rewritten after each run."""
    context = prepare(args, directory)
    context["peak_flops"] = matmul_rate(args.threads)
    runs: dict[System, list[dict]] = {system: [] for system in systems}
    model = f"{Path(args.gguf).name} (chat template)" if args.gguf else f"random {args.size}"
    header = (
        "# lightning-dpo against TRL's DPOTrainer, same model, data, batches and steps\n\n"
        f"Machine: {machine_info()}\n"
        f"Model {model} ({context['parameters'] / 1e6:.1f}M parameters, LoRA adapters "
        f"{context['adapters'] / 1e6:.2f}M); {len(context['pairs'])} pairs of {args.data} in "
        f"order, {args.batch_size} per step, {args.steps} steps x {args.rounds} rounds; "
        "identical token ids checked\n"
    )
    for round_index in range(args.rounds):
        shift = round_index % len(systems)
        for system in systems[shift:] + systems[:shift]:
            runs[system].append(spawn(system, directory, args))
            context["peak_flops"] = max(context["peak_flops"], matmul_rate(args.threads))
            measured = {s: summarise(s, found, context) for s, found in runs.items() if found}
            notes = check_runs(measured)
            flops = f"dense fp32 matmul peak: {context['peak_flops'] / 1e9:.1f} GFLOP/s\n"
            text = f"{header}{flops}\n{table(measured, context)}\n\n" + "\n".join(notes) + "\n"
            if args.out:
                Path(args.out).write_text(text)
            print(text, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse, then measure (or, with ``--worker``, run one system)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preference data file")
    parser.add_argument("--size", default="135M", help="random model's size (bench/_models.py)")
    parser.add_argument("--gguf", help="a real model's GGUF file instead of the random model")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (2 untimed)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--systems", default="all", help="all, off, or comma-separated names")
    parser.add_argument("--out", help="rewrite the table to this file after each run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.steps < 4:
        raise ValueError(f"--steps must be >= 4 (2 untimed, 2 timed), got {args.steps}")
    systems = select_systems(args.systems)
    set_threads(args.threads)
    quiet()
    if args.worker:
        (system,) = select_systems(args.worker)
        figures = worker(system, Path(args.workdir), args)
        (Path(args.workdir) / "result.json").write_text(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory() as tmp:
        measure(args, Path(tmp), systems)


if __name__ == "__main__":
    main()
