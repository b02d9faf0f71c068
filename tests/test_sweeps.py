"""Multirun summaries (grid and Optuna) and the summary tables built from job logs."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import yaml

from lightning_dpo.sweep_summary import summarize_sweep
from tests.helpers import FAST_OVERRIDES, REPO, script_env

HEADER = "step,train/loss,val/loss,val/rewards/accuracies,val/rewards/margins\n"


def fake_job(sweep, number, overrides, rows=None):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if rows is not None:
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text(HEADER + "".join(rows))


def read_summary(sweep):
    with (sweep / "summary.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_summary_of_hand_made_jobs(tmp_path):
    fake_job(
        tmp_path, 0, ["loss=dpo", "seed=1"], ["0,0.7,,,\n", "1,,0.6,0.5,0.1\n", "3,,0.4,0.75,0.3\n"]
    )
    fake_job(tmp_path, 1, ["loss=ipo", "seed=1"], ["1,,9.0,1.0,0.2\n", "3,,8.0,0.5,0.25\n"])
    fake_job(tmp_path, 2, ["loss=rpo", "seed=1"])  # failed: no log
    summarize_sweep(tmp_path)
    rows = read_summary(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["overrides"] == "loss=dpo seed=1"
    assert (rows[0]["last_step"], rows[0]["val/loss"], rows[0]["val/rewards/accuracies"]) == (
        "3",
        "0.4",
        "0.75",
    )
    # Final accuracy 0.5, best 1.0 (at step 1).
    assert (rows[1]["val/rewards/accuracies"], rows[1]["best val/rewards/accuracies"]) == (
        "0.5",
        "1.0",
    )
    assert math.isnan(float(rows[2]["val/loss"]))
    assert rows[2]["status"].startswith("no csv/metrics.csv")
    markdown = (tmp_path / "summary.md").read_text().splitlines()
    assert markdown[0] == "Overrides shared by all 3 jobs: `seed=1`"
    assert markdown[4] == "| 0 | loss=dpo | 3 | 0.4000 | 0.7500 | 0.3000 | 0.7500 | ok |"
    assert (tmp_path / "val_curves.png").read_bytes()[:4] == b"\x89PNG"


def run_train(args, tmp_path):
    env = script_env(OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "train.py",
        *args,
        *FAST_OVERRIDES,
        "callbacks.samples.num_prompts=1",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def last_logged(job_dir, metric):
    with (job_dir / "csv" / "metrics.csv").open(newline="") as file:
        values = [row[metric] for row in csv.DictReader(file) if row[metric]]
    return float(values[-1])


@pytest.mark.slow
def test_grid_multirun_writes_the_summary(tmp_path):
    sweep = tmp_path / "sweep"
    run_train(["-m", "loss=dpo,ipo", f"hydra.sweep.dir={sweep}"], tmp_path)
    rows = read_summary(sweep)
    assert [r["overrides"].split()[0] for r in rows] == ["loss=dpo", "loss=ipo"]
    for row in rows:
        for metric in ("val/loss", "val/rewards/accuracies", "val/rewards/margins"):
            assert float(row[metric]) == last_logged(sweep / row["job"], metric)
    assert "| 1 | loss=ipo |" in (sweep / "summary.md").read_text()
    assert (sweep / "val_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_optuna_search_runs_two_trials_and_summarises_them(tmp_path):
    sweep = tmp_path / "optuna"
    run_train(
        ["hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"], tmp_path
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"loss", "loss.beta", "module.optimizer.lr"}
    rows = read_summary(sweep)
    assert len(rows) == 2
    finals = [float(row["val/rewards/accuracies"]) for row in rows]
    assert results["best_value"] == max(finals)  # Optuna maximised what train.py returned
    for row in rows:
        assert "loss.beta=" in row["overrides"] and "module.optimizer.lr=" in row["overrides"]
