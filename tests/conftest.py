"""Shared fixtures: a tiny tokenizer, tiny policies, batches and composed Hydra configs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

from lightning_dpo.data import PreferenceDataModule, build_char_tokenizer
from lightning_dpo.policy import add_lora, build_tiny_llama
from lightning_dpo.reference import eval_mode
from lightning_dpo.reference.diagnostics import BracketCounter
from lightning_dpo.scoring import (
    DEFAULT_LOGPS_CHUNK_SIZE,
    response_head_unsupported,
    sequence_logps,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def tiny_policy(tokenizer):
    torch.manual_seed(0)
    return build_tiny_llama(
        tokenizer,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
    )


@pytest.fixture
def lora_policy(tokenizer):
    torch.manual_seed(0)
    base = build_tiny_llama(
        tokenizer,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return add_lora(base, r=4, lora_alpha=8)


@pytest.fixture
def brackets():
    """Counts each reference callback's brackets during the test (``brackets.of(callback)``)."""
    with BracketCounter() as counter:
        yield counter


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


@pytest.fixture
def bare_trainer(tmp_path):
    """:func:`make_bare_trainer` under the test's ``tmp_path``: ``bare_trainer(callbacks, ...)``."""

    def build(callbacks: list, max_steps: int = 5, **kwargs) -> pl.Trainer:
        return make_bare_trainer(tmp_path, callbacks, max_steps, **kwargs)

    return build


def small_datamodule(tokenizer=None, batch_size: int = 8, **kwargs) -> PreferenceDataModule:
    """The embedded task, shrunk for tests (64 training and 16 validation pairs by default)."""
    sizes = {"num_train": 64, "num_val": 16, **kwargs}
    return PreferenceDataModule(tokenizer=tokenizer, batch_size=batch_size, **sizes)


@pytest.fixture
def batch(tokenizer) -> dict[str, torch.Tensor]:
    datamodule = small_datamodule(tokenizer)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))


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
    "data.num_train=64",
    "data.num_val=16",
    "data.batch_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
"""Overrides that make a composed run take seconds."""

LEAN_OVERRIDES = ["~callbacks.hf_export", "~callbacks.training_plot", "~callbacks.samples"]
"""Drop the export, plot and samples callbacks (tested on their own) from many-job runs."""


def reference_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the reference callback computes, from ``model`` as it is (eval mode, no grad).

    Uses ``PreferenceModule``'s defaults (chunking, the response-only head where the model
    allows it) so that equality can be bitwise; leaves the train/eval flags as they were.
    """
    response_only = response_head_unsupported(model) is None
    with torch.no_grad(), eval_mode(model):
        return sequence_logps(
            model, batch, chunk_size=DEFAULT_LOGPS_CHUNK_SIZE, response_only=response_only
        ).sums


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


def save_local_checkpoint(path: Path, architecture: str, tokenizer, **overrides) -> Path:
    """Save a tiny random ``architecture`` model and ``tokenizer`` with ``save_pretrained``.

    What a user's local checkpoint directory looks like, without any download.
    """
    import transformers

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
