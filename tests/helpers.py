"""The one home of the tests' shared helpers and constants (fixtures live in ``conftest.py``).

Test modules import from here, never from each other; the scripts the tests start in
processes of their own (``tests/scripts``, ``tests/distributed``) import from here too.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
import transformers
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, open_dict

from lightning_dpo import PreferenceLoss, PreferenceModule
from lightning_dpo.batch import PAIR_SLOTS_KEY
from lightning_dpo.data import PreferenceDataModule, build_byte_tokenizer, build_char_tokenizer
from lightning_dpo.data.settings import BatchSettings, DataSource, TokenSettings
from lightning_dpo.losses import PairLogps
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.policy import build_policy
from lightning_dpo.reference import ReferenceSwapCallback, eval_mode
from lightning_dpo.reference.sources import SwapSource
from lightning_dpo.scoring import (
    DEFAULT_LOGPS_CHUNK_SIZE,
    ScoringPlan,
    response_head_unsupported,
    sequence_logps,
)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# --- processes of their own -----------------------------------------------------------------


def script_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository importable (``tests.helpers`` too)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def run_python(*args: str, timeout: float | None = None, **extra_env: str):
    """``python ARGS`` from the repository root; its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=script_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- tiny models ----------------------------------------------------------------------------

TINY_POLICY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
"""The tiny Llama of the tests and their scripts (``build_policy(tokenizer, tiny=...)``)."""


def initial_policy() -> torch.nn.Module:
    """The policy the scripts start from (they seed 0 before building it)."""
    torch.manual_seed(0)
    return build_policy(build_char_tokenizer(), tiny=TINY_POLICY)


_DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 128,
}
TINY_CONFIGS = {
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128}),
    "llama": ("LlamaConfig", {**_DECODER, "num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", {**_DECODER, "num_key_value_heads": 1}),
    "mistral": ("MistralConfig", {**_DECODER, "num_key_value_heads": 1}),
}
"""Tiny random configs of real architectures, for local checkpoints built in-process."""

VOCAB = 97
"""Vocabulary of :func:`build_model`'s models and :func:`random_pairs`' tokens."""


def build_model(architecture: str, attention: str = "sdpa", **overrides) -> torch.nn.Module:
    """A tiny random ``architecture`` model in eval mode (dropout off: exact comparisons)."""
    config_name, fields = TINY_CONFIGS[architecture]
    config = getattr(transformers, config_name)(vocab_size=VOCAB, **{**fields, **overrides})
    config._attn_implementation = attention
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def random_pairs(count: int = 5, seed: int = 0) -> list[TokenizedPair]:
    """Pairs of random tokens with ragged prompts and responses (1 to 9 response tokens)."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> tuple[int, ...]:
        length = int(torch.randint(low, high, (1,), generator=generator))
        return tuple(torch.randint(3, VOCAB, (length,), generator=generator).tolist())

    return [TokenizedPair(tokens(2, 12), tokens(1, 10), tokens(1, 10)) for _ in range(count)]


def save_local_checkpoint(path: Path, architecture: str, tokenizer, **overrides) -> Path:
    """Save a tiny random ``architecture`` model and ``tokenizer`` with ``save_pretrained``.

    What a user's local checkpoint directory looks like, without any download.
    """
    config_name, fields = TINY_CONFIGS[architecture]
    settings = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **fields,
        **overrides,
    }
    config = getattr(transformers, config_name)(**settings)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- losses ---------------------------------------------------------------------------------

LN2, LN3 = math.log(2.0), math.log(3.0)
RTOL = 1e-6
"""Relative tolerance of :func:`close`: float32 rounding of hand-derived values."""


def t(*values: float, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    """A 1-D tensor of ``values``."""
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def make_logps(
    pc: list[float],
    pr: list[float],
    rc: list[float] | None = None,
    rr: list[float] | None = None,
    nc: list[int] | None = None,
    nr: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
) -> PairLogps:
    """Build PairLogps; references default to 0, token counts to 1 (long)."""
    zeros = [0.0] * len(pc)
    ones = [1] * len(pc)
    return PairLogps(
        policy_chosen=t(*pc, dtype=dtype, grad=grad),
        policy_rejected=t(*pr, dtype=dtype, grad=grad),
        reference_chosen=t(*(rc if rc is not None else zeros), dtype=dtype),
        reference_rejected=t(*(rr if rr is not None else zeros), dtype=dtype),
        chosen_tokens=torch.tensor(nc if nc is not None else ones, dtype=torch.long),
        rejected_tokens=torch.tensor(nr if nr is not None else ones, dtype=torch.long),
    )


def close(actual: torch.Tensor, expected: list[float], atol: float = 0.0) -> None:
    """``actual`` equals the hand-derived ``expected`` within :data:`RTOL`."""
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), rtol=RTOL, atol=atol
    )


# --- data -----------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }};{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
"""A tiny chat template for the character tokenizer: ``<role>content;`` per message."""


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, as SmolLM2's and Qwen's templates write it (no BOS; each turn ends ``<|im_end|>``)."""
CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>")


def chatml_tokenizer():
    """The byte tokenizer with ChatML's two special tokens and :data:`CHATML_TEMPLATE`."""
    tokenizer = build_byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_SPECIALS)})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def chatml(messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    """ChatML text of ``messages``, written by hand (what :data:`CHATML_TEMPLATE` must give)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def chatml_ids(tokenizer, text: str) -> list[int]:
    """Ids of ChatML ``text`` worked out by hand: each special its id, each other byte 3 + b."""
    ids: list[int] = []
    for piece in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
        if piece in CHATML_SPECIALS:
            ids.append(tokenizer.convert_tokens_to_ids(piece))
        else:
            ids.extend(3 + byte for byte in piece.encode("utf-8"))
    return ids


def flip_bytes_in_the_middle(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of a file, as a bad disk or a bad copy leaves it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def write_jsonl(path: Path, rows: list[object]) -> Path:
    """Writes rows (dicts JSON-encoded, strings verbatim), one per line."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_datamodule(
    tokenizer=None, batch_size: int = 8, seed: int = 0, **settings
) -> PreferenceDataModule:
    """The embedded task, shrunk for tests (64 training and 16 validation pairs by default).

    ``settings``: fields of the data module's settings groups, by name (``layout="packed"``,
    ``num_train=4``), each handed to its group.
    """
    given = {"num_train": 64, "num_val": 16, "batch_size": batch_size, **settings}
    groups = {"source": DataSource, "batches": BatchSettings, "tokens": TokenSettings}
    grouped = {
        group: {f.name: given.pop(f.name) for f in fields(kind) if f.name in given}
        for group, kind in groups.items()
    }
    assert not given, f"not a field of {sorted(groups)}: {sorted(given)}"
    return PreferenceDataModule(tokenizer, **grouped, seed=seed)


# --- trainers and modules -------------------------------------------------------------------


def make_bare_trainer(root: Path, callbacks: list, max_steps: int = 5, **kwargs) -> pl.Trainer:
    """A quiet CPU ``Trainer``: no logger, checkpoints, progress bar, summary or sanity check.

    Validation is off unless ``limit_val_batches`` is given; any other argument overrides.
    """
    settings = {
        "default_root_dir": root,
        "max_steps": max_steps,
        "callbacks": callbacks,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "use_distributed_sampler": False,  # the data module deals batches to the ranks itself
        **kwargs,
    }
    return pl.Trainer(**settings)


def step_checkpoints(dirpath: str | Path, every: int) -> ModelCheckpoint:
    """A checkpoint every ``every`` optimizer steps, all kept, named ``step{N}.ckpt``."""
    return ModelCheckpoint(
        dirpath,
        "step{step}",
        every_n_train_steps=every,
        save_top_k=-1,
        auto_insert_metric_name=False,
    )


def dpo_module(policy, objective: str = "dpo", lr: float = 1e-2) -> PreferenceModule:
    """A ``PreferenceModule`` with ``objective`` at beta 0.1 and AdamW at ``lr``."""
    return PreferenceModule(
        policy, PreferenceLoss(objective, beta=0.1), partial(torch.optim.AdamW, lr=lr)
    )


class RecordBatches(Callback):
    """Keeps each training batch (with its reference log-probs) and the step losses."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batches.append({k: v.clone() for k, v in batch.items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.losses.append(float(outputs["loss"]))


def brackets_of(callback: ReferenceSwapCallback) -> int:
    """Reference brackets a callback's source has run (0 for a cache, or before any fit)."""
    return callback.source.brackets if isinstance(callback.source, SwapSource) else 0


class BracketCount:
    """The ``brackets`` fixture: ``brackets.of(callback)``."""

    of = staticmethod(brackets_of)


def reference_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the reference callback computes, from ``model`` as it is (eval mode, no grad).

    Uses ``PreferenceModule``'s defaults (chunking, the response-only head where the model
    allows it) so that equality can be bitwise; leaves the train/eval flags as they were.
    """
    response_only = response_head_unsupported(model) is None
    with torch.no_grad(), eval_mode(model):
        return sequence_logps(model, batch, plan_for(model, batch, response_only)).sums


def plan_for(
    model,
    batch: dict,
    response_only: bool = False,
    chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
) -> ScoringPlan:
    """A hand-made scoring plan for ``batch`` as laid out (the test knows the layout it built).

    ``prefix_shared`` and ``packed`` batches score alike (the mask comes from the batch's
    slots and branches), so a shared batch is planned as ``packed``.
    """
    layout = "packed" if PAIR_SLOTS_KEY in batch else "padded"
    return ScoringPlan.unprobed(model, layout, response_only, chunk_size)


# --- composed Hydra configs -----------------------------------------------------------------


def compose_train_config(output_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/train.yaml as `python train.py` would, writing under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides or [], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


FAST_OVERRIDES = [
    "data.source.num_train=64",
    "data.source.num_val=16",
    "data.batches.batch_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
"""Overrides that make a composed run take seconds."""

LEAN_OVERRIDES = ["~callbacks.hf_export", "~callbacks.training_plot", "~callbacks.samples"]
"""Drop the export, plot and samples callbacks (tested on their own) from many-job runs."""

# --- two-process (DDP, FSDP2) runs ----------------------------------------------------------

PAGE = 4096
"""A host memory page, in bytes (the slack of shared-memory PSS figures)."""
DISTRIBUTED_SCRIPT = REPO / "tests" / "distributed" / "run_reference.py"


def run_two_ranks(strategy: str, out_dir: Path, *options: str) -> list[dict]:
    """Run :data:`DISTRIBUTED_SCRIPT` on two CPU ranks; each rank's record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_python(str(DISTRIBUTED_SCRIPT), strategy, str(out_dir), *options, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
