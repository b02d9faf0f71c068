"""A PNG of loss, reward accuracy, margins and log-probs over steps, drawn at the end of fit."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

PANELS = (
    ("loss", ("loss",)),
    ("reward accuracy", ("rewards/accuracies",)),
    ("reward margin (chosen - rejected)", ("rewards/margins",)),
    ("policy log-probs of the responses", ("logps/chosen", "logps/rejected")),
)
"""Title and metrics (without their ``train/``/``val/`` prefix) of each panel.

The log-prob panel shows what accuracy and margins hide: DPO can widen the margin while
the chosen response itself becomes less likely.
"""

PANEL_METRICS = tuple(metric for _, metrics in PANELS for metric in metrics)

Series = Sequence[tuple[int, float]]
"""``(step, value)`` points of one metric."""


def new_figure(ncols: int, width: float = 5.0, height: float = 3.6, nrows: int = 1):
    """A figure of ``nrows x ncols`` axes (flattened), drawn off-screen (no pyplot state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return figure, list(figure.subplots(nrows, ncols, squeeze=False).flat)


def plot_training_curves(
    history: Mapping[str, Series], path: str | Path, title: str | None = None
) -> Path:
    """Draw the train (line) and validation (markers) curves of :data:`PANELS` to a PNG.

    Args:
        history: ``(step, value)`` points by full metric name (``train/loss``, ``val/loss``).
        path: The PNG to write (parent directories are created).
        title: Figure title.

    Returns:
        The PNG path.
    """
    figure, axes = new_figure(2, width=6.0, nrows=2)
    for ax, (label, metrics) in zip(axes, PANELS, strict=True):
        for metric in metrics:
            _plot_metric(ax, history, metric, prefix="" if len(metrics) == 1 else f"{metric} ")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if metrics == ("rewards/accuracies",):
            ax.set_ylim(-0.02, 1.02)
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _plot_metric(ax, history: Mapping[str, Series], metric: str, prefix: str) -> None:
    """Train points as a line, validation points as markers (non-finite values dropped)."""
    styles = (("train", {"lw": 1.0, "alpha": 0.7}), ("val", {"marker": "o", "markersize": 4}))
    for stage, style in styles:
        points = [(s, v) for s, v in history.get(f"{stage}/{metric}", ()) if math.isfinite(v)]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=f"{prefix}{stage}", **style)


class TrainingPlotCallback(Callback):
    """Record the key metrics while fitting and save :func:`plot_training_curves` at the end.

    Train metrics are read from ``trainer.callback_metrics`` after each training batch;
    validation metrics after each validation run except the sanity check. Only global
    rank zero writes the PNG. Independent of the logger: works with any ``logger=``.

    Args:
        path: The PNG to write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _record(self, trainer: pl.Trainer, stage: str) -> None:
        for metric in PANEL_METRICS:
            value = trainer.callback_metrics.get(f"{stage}/{metric}")
            if value is not None:
                points = self.history.setdefault(f"{stage}/{metric}", [])
                points.append((trainer.global_step, float(value)))

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Record the train metrics of this step."""
        self._record(trainer, "train")

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the validation metrics (the sanity check is skipped)."""
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the PNG."""
        self._write(trainer, pl_module)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Ctrl-C or a crash: write the curves recorded so far."""
        if self.history:
            self._write(trainer, pl_module)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            plot_training_curves(self.history, self.path, title=_title(pl_module))
            rank_zero_info(f"Training curves written to {self.path}")


def _title(pl_module: pl.LightningModule) -> str:
    """``loss repr`` of the module, e.g. ``PreferenceLoss(objective='dpo', beta=0.1)``."""
    return repr(getattr(pl_module, "loss", type(pl_module).__name__))
