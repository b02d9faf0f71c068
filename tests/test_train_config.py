"""The Hydra entry point: every model x loss, sweeps, and bad configs named clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import hydra
import pytest
from hydra.errors import ConfigCompositionException, InstantiationException

from lightning_dpo.data import DataValidationError
from lightning_dpo.scoring import DEFAULT_LOGPS_CHUNK_SIZE
from lightning_dpo.training import train
from tests.helpers import (
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    REPO,
    compose_train_config,
    script_env,
)


@pytest.mark.parametrize("loss", ["dpo", "ipo", "rpo"])
@pytest.mark.parametrize("model", ["full", "lora"])
def test_fast_dev_run_every_model_and_loss(tmp_path, model, loss):
    cfg = compose_train_config(
        tmp_path,
        [
            f"model={model}",
            f"loss={loss}",
            "++trainer.fast_dev_run=true",
            *FAST_OVERRIDES,
            *LEAN_OVERRIDES,
        ],
    )
    metrics = train(cfg)
    assert "train/loss" in metrics
    assert "val/rewards/accuracies" in metrics


def test_default_run_writes_log_and_checkpoint(tmp_path):
    cfg = compose_train_config(tmp_path, FAST_OVERRIDES)
    metrics = train(cfg)
    assert 0.0 <= metrics["val/rewards/accuracies"] <= 1.0
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    expected = ("train/loss", "train/rewards/chosen", "val/rewards/accuracies", "val/logps/chosen")
    for name in expected:
        assert name in header
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(("group", "choice"), [("loss", "dpoo"), ("model", "qlora")])
def test_unknown_choice_lists_the_valid_options(tmp_path, group, choice):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train_config(tmp_path, [f"{group}={choice}"])
    message = str(error.value)
    assert f"Could not find '{group}/{choice}'" in message
    expected = ["dpo", "ipo", "rpo"] if group == "loss" else ["full", "lora"]
    for option in expected:
        assert option in message


@pytest.mark.parametrize("beta", ["0", "-0.5"])
def test_non_positive_beta_is_refused(tmp_path, beta):
    cfg = compose_train_config(tmp_path, [f"loss.beta={beta}", *FAST_OVERRIDES])
    with pytest.raises(InstantiationException, match=r"loss\.beta must be a finite number > 0"):
        train(cfg)


def test_rpo_on_data_without_rewards_names_file_record_and_fields(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"{i}{i + 1}>", "chosen": "12", "rejected": "21"} for i in range(1, 9)]
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    cfg = compose_train_config(
        tmp_path,
        ["data=jsonl", f"data.source.train_file={data}", "loss=rpo", *FAST_OVERRIDES],
    )
    with pytest.raises(DataValidationError) as error:
        train(cfg)
    message = str(error.value)
    assert str(data) in message
    assert "'chosen_reward', 'rejected_reward'" in message
    assert "rpo_bwd_kl" in message


@pytest.mark.slow
def test_multirun_sweep_runs_every_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "loss=dpo,ipo,rpo",
        "model=full,lora",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST_OVERRIDES,
        *LEAN_OVERRIDES,
        "trainer.max_steps=2",
    ]
    env = script_env()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3", "4", "5"]
    overrides = {(p / ".hydra" / "overrides.yaml").read_text() for p in jobs}
    assert len(overrides) == 6
    for job in jobs:
        header = (job / "csv" / "metrics.csv").read_text().splitlines()[0]
        assert "val/rewards/accuracies" in header
        # Lightning's and this package's messages reach Hydra's log file too.
        log = (job / "train.log").read_text()
        assert "Reference policy:" in log
        assert "`Trainer.fit` stopped: `max_steps=2` reached." in log


def test_config_defaults_are_the_python_defaults(tmp_path):
    """One default per setting: the YAML states the module's own default chunk size."""
    cfg = compose_train_config(tmp_path)
    assert cfg.module.logps_chunk_size == DEFAULT_LOGPS_CHUNK_SIZE


def test_objective_hyper_parameters_are_overridden_on_the_partial(tmp_path):
    """``loss.objective.<name>=`` sets the partial's keyword; the loss shows it."""
    cfg = compose_train_config(tmp_path, ["loss=robust", "loss.objective.label_smoothing=0.2"])
    loss = hydra.utils.instantiate(cfg.loss)
    assert loss.objective == "robust(label_smoothing=0.2)"
    rpo = hydra.utils.instantiate(compose_train_config(tmp_path, ["experiment=rpo_sq"]).loss)
    assert rpo.objective == "rpo_sq(gt_reward_scale=5.0)"
