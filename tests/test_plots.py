"""TrainingPlotCallback: the curves it draws are the metrics Lightning logged."""

from __future__ import annotations

import csv
from functools import partial

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from matplotlib.image import imread

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.callbacks.plots import PANEL_METRICS, TrainingPlotCallback, plot_training_curves
from tests.helpers import make_bare_trainer, small_datamodule

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def csv_series(path, metric):
    with path.open(newline="") as file:
        return [
            (int(row["step"]), float(row[metric])) for row in csv.DictReader(file) if row[metric]
        ]


def test_plot_writes_a_png_with_one_panel_per_metric(tmp_path):
    history = {
        "train/loss": [(1, 0.7), (2, 0.6), (3, 0.5)],
        "val/loss": [(2, 0.65)],
        "train/rewards/accuracies": [(1, 0.0), (2, 0.5), (3, 1.0)],
    }
    path = plot_training_curves(history, tmp_path / "sub" / "curves.png", title="t")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(path).shape
    assert width == pytest.approx(height * 12.0 / 7.2, rel=0.05)  # 2 x 2 panels of 6 x 3.6


def test_callback_history_matches_the_csv_log(tmp_path, tiny_policy):
    callback = TrainingPlotCallback(tmp_path / "curves.png")
    trainer = make_bare_trainer(
        tmp_path,
        [ReferenceSwapCallback(), callback],
        max_steps=6,
        val_check_interval=3,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path, name="csv", version=""),
        limit_val_batches=None,
        num_sanity_val_steps=1,
    )
    module = PreferenceModule(
        tiny_policy,
        PreferenceLoss("dpo", beta=0.1),
        partial(torch.optim.AdamW, lr=1e-2),
    )
    trainer.fit(module, datamodule=small_datamodule())
    assert callback.path.read_bytes()[:8] == PNG_SIGNATURE
    log = tmp_path / "csv" / "metrics.csv"
    for metric in PANEL_METRICS:
        for stage in ("train", "val"):
            name = f"{stage}/{metric}"
            recorded = callback.history[name]
            logged = csv_series(log, name)
            assert [v for _, v in recorded] == pytest.approx([v for _, v in logged], rel=1e-6)
            # Lightning logs at the step count before the optimizer step; we record after.
            assert [s for s, _ in recorded] == [s + 1 for s, _ in logged]
    assert [s for s, _ in callback.history["val/loss"]] == [3, 6]  # the sanity check is left out
    assert len(callback.history["train/loss"]) == 6


def test_panels_cover_loss_accuracy_margins_and_logps():
    assert PANEL_METRICS == (
        "loss",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    )
