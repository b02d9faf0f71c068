"""The default run leaves its CSV log, a checkpoint, the HF export, the plot and samples."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_dpo.training import train
from tests.conftest import FAST_OVERRIDES, compose_train_config


def test_default_run_leaves_log_checkpoint_export_and_plot(tmp_path):
    cfg = compose_train_config(tmp_path, FAST_OVERRIDES)
    train(cfg)
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert any(row["val/rewards/accuracies"] for row in rows)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == cfg.trainer.max_steps
    export = tmp_path / "hf_export"
    model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True)
    # The export is the final policy: the same weights as the last checkpoint's.
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(
            tensor, checkpoint["state_dict"][f"policy.{name}"], rtol=0, atol=0
        )
    assert (export / "tokenizer.json").is_file()
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "## step 2: reference" in (tmp_path / "samples.md").read_text()


@pytest.mark.parametrize("merge", ["false", "true"])
def test_lora_run_exports_adapter_or_merged_model(tmp_path, merge):
    overrides = ["model=lora", f"callbacks.hf_export.merge_lora={merge}", *FAST_OVERRIDES]
    train(compose_train_config(tmp_path, overrides))
    export = tmp_path / "hf_export"
    assert (export / "adapter_config.json").is_file() == (merge == "false")
    assert (export / "model.safetensors").is_file() == (merge == "true")
