"""logger=tensorboard and logger=wandb (offline): metrics and samples reach the logger."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_dpo.training import train
from tests.helpers import FAST_OVERRIDES, compose_train_config


def test_tensorboard_logger_gets_scalars_and_sample_text(tmp_path):
    train(compose_train_config(tmp_path, ["logger=tensorboard", *FAST_OVERRIDES]))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for name in ("train/loss", "val/rewards/accuracies", "lr-AdamW"):
        assert name in scalars
    assert {"samples/policy/text_summary", "samples/reference/text_summary"} <= set(
        events.Tags()["tensors"]
    )
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # the CSV log stays beside it


@pytest.mark.slow
def test_wandb_logger_runs_offline_one_run_per_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["logger=wandb", "logger.wandb.offline=true", *FAST_OVERRIDES]
    for job in ("0", "1"):  # two jobs in one process, as a multirun runs them
        train(compose_train_config(tmp_path / job, overrides))
    runs = sorted(tmp_path.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2  # the first run was finished, not reused
    for run in runs:
        assert list(run.glob("run-*.wandb"))
