"""The default run leaves its CSV log, a checkpoint, the HF export, the plot and samples."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from transformers import AutoModelForCausalLM

from lightning_dpo.training import build, train
from tests.helpers import FAST_OVERRIDES, LEAN_OVERRIDES, compose_train_config


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


class InterruptAt(Callback):
    """Press Ctrl-C when optimizer step ``step`` is about to start."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        """Raise KeyboardInterrupt at the chosen step."""
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_export_plot_and_last_ckpt_of_the_last_step(tmp_path):
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, "trainer.max_steps=10"])
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(InterruptAt(3))
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with code 1
        trainer.fit(module, datamodule=datamodule)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_export", local_files_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][f"policy.{name}"])
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def _validated_steps(run) -> list[int]:
    """Optimizer steps after which validation ran (Lightning logs ``step`` from 0)."""
    with (run / "csv" / "metrics.csv").open(newline="") as file:
        return [int(row["step"]) + 1 for row in csv.DictReader(file) if row["val/loss"]]


def test_a_run_shorter_than_the_interval_is_validated_at_its_last_step(tmp_path, caplog):
    overrides = [*FAST_OVERRIDES, *LEAN_OVERRIDES, "trainer.max_steps=3"]
    cfg = compose_train_config(tmp_path, [*overrides, "trainer.val_check_interval=50"])
    with caplog.at_level(logging.INFO):
        metrics = train(cfg)
    assert "val/rewards/accuracies" in metrics
    assert _validated_steps(tmp_path) == [3]
    assert "validating once, after the last step" in caplog.text
    best = torch.load(next((tmp_path / "checkpoints").glob("step*.ckpt")), weights_only=False)
    assert best["global_step"] == 3


def test_the_last_step_is_validated_when_the_interval_skips_it(tmp_path):
    overrides = [*FAST_OVERRIDES, *LEAN_OVERRIDES, "trainer.max_steps=5"]
    train(compose_train_config(tmp_path, overrides))  # interval 2
    assert _validated_steps(tmp_path) == [2, 4, 5]


def test_val_check_interval_counts_optimizer_steps_under_accumulation(tmp_path):
    overrides = [*FAST_OVERRIDES, *LEAN_OVERRIDES, "trainer.accumulate_grad_batches=2"]
    train(compose_train_config(tmp_path, overrides))  # 4 steps, interval 2
    assert _validated_steps(tmp_path) == [2, 4]
