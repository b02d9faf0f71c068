"""After a Hydra multirun: a table of every job's overrides and final metrics, and a plot.

Registered in ``conf/hydra/default.yaml`` as a Hydra callback, so every
``python train.py -m ...`` (grid or Optuna) ends by writing into the sweep directory:

- ``summary.csv`` and ``summary.md``: one row per job, its overrides, last step, and the
  final (and best) validation metrics read from the job's CSV log;
- ``val_curves.png``: the validation curves of all jobs, one line per job.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightning_dpo.callbacks.plots import new_figure

log = logging.getLogger(__name__)

METRICS = ("val/loss", "val/rewards/accuracies", "val/rewards/margins")
"""Validation metrics summarised by default (final value of each)."""


@dataclass
class JobResult:
    """What one job of a sweep left behind.

    Attributes:
        job: The job's directory name (its number).
        overrides: Its command-line overrides.
        curves: ``(step, value)`` points by metric name, from its CSV log.
        status: ``"ok"``, or why there are no metrics.
    """

    job: str
    overrides: list[str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    status: str = "ok"

    def final(self, metric: str) -> float:
        """The last logged value of ``metric`` (NaN when never logged)."""
        points = self.curves.get(metric)
        return points[-1][1] if points else math.nan

    def best(self, metric: str, mode: str = "max") -> float:
        """The best logged value of ``metric`` (NaN when never logged)."""
        values = [value for _, value in self.curves.get(metric, ())]
        if not values:
            return math.nan
        return max(values) if mode == "max" else min(values)

    @property
    def last_step(self) -> int | None:
        """The last step any summarised metric was logged at."""
        steps = [points[-1][0] for points in self.curves.values() if points]
        return max(steps) if steps else None


def read_curves(path: Path, metrics: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """``(step, value)`` points of each metric in a Lightning ``CSVLogger`` file."""
    curves: dict[str, list[tuple[int, float]]] = {metric: [] for metric in metrics}
    with path.open(newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            for metric in metrics:
                if row.get(metric):
                    try:
                        curves[metric].append((int(row["step"]), float(row[metric])))
                    except (KeyError, ValueError) as error:
                        raise ValueError(f"{path}:{line}: bad '{metric}' row: {error}") from error
    return curves


def collect_jobs(
    sweep_dir: Path, metrics: tuple[str, ...] = METRICS, metrics_file: str = "csv/metrics.csv"
) -> list[JobResult]:
    """Read every job directory (one holding ``.hydra/overrides.yaml``) of a sweep."""
    jobs = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        result = JobResult(job=job_dir.name, overrides=overrides)
        log = job_dir / metrics_file
        if log.is_file():
            result.curves = read_curves(log, metrics)
        else:
            result.status = f"no {metrics_file} (job failed, or no CSV logger)"
        jobs.append(result)
    return sorted(
        jobs,
        key=lambda job: (not job.job.isdigit(), int(job.job) if job.job.isdigit() else 0, job.job),
    )


def shared_overrides(jobs: list[JobResult]) -> list[str]:
    """The overrides every job has, in the first job's order."""
    if not jobs:
        return []
    common = set(jobs[0].overrides).intersection(*(job.overrides for job in jobs[1:]))
    return [o for o in jobs[0].overrides if o in common]


def varying_overrides(jobs: list[JobResult]) -> list[list[str]]:
    """Each job's overrides, without those every job shares."""
    shared = set(shared_overrides(jobs))
    return [[o for o in job.overrides if o not in shared] for job in jobs]


def summary_rows(jobs: list[JobResult], metrics: tuple[str, ...], optimized: str | None):
    """Header and one row per job: job, overrides, last step, final metrics, best, status."""
    best_name = f"best {optimized}" if optimized else None
    header = [
        "job",
        "overrides",
        "last_step",
        *metrics,
        *([best_name] if best_name else []),
        "status",
    ]
    rows = []
    for job in jobs:
        values: list[Any] = [job.final(metric) for metric in metrics]
        if optimized:
            values.append(job.best(optimized, "min" if optimized.endswith("loss") else "max"))
        rows.append([job.job, " ".join(job.overrides), job.last_step, *values, job.status])
    return header, rows


def write_tables(
    header: list[str],
    rows: list[list[Any]],
    sweep_dir: Path,
    shared: list[str],
    varying: list[list[str]],
) -> None:
    """Write ``summary.csv`` (all overrides, full precision) and ``summary.md``.

    The Markdown table lists only the overrides that vary between jobs (the shared ones
    are named once above it) and rounds to 4 decimals.
    """
    with (sweep_dir / "summary.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(["" if value is None else value for value in row] for row in rows)

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = [f"Overrides shared by all {len(rows)} jobs: `{' '.join(shared) or '(none)'}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row, own in zip(rows, varying, strict=True):
        cells = [row[0], " ".join(own) or "(defaults)", *row[2:]]
        lines.append("| " + " | ".join(fmt(value) for value in cells) + " |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_sweep(jobs: list[JobResult], metrics: tuple[str, ...], path: Path) -> None:
    """One panel per metric, one line per job, labelled by the job's varying overrides."""
    figure, axes = new_figure(len(metrics), height=4.2)
    labels = [
        f"{job.job}: {' '.join(varying) or '(defaults)'}"
        for job, varying in zip(jobs, varying_overrides(jobs), strict=True)
    ]
    for ax, metric in zip(axes, metrics, strict=True):
        for job, label in zip(jobs, labels, strict=True):
            points = job.curves.get(metric)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        values = [v for job in jobs for _, v in job.curves.get(metric, ())]
        if metric.endswith("loss") and values and min(values) > 0:
            ax.set_yscale("log")  # losses of different objectives differ by orders
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(
            handles, names, loc="outside lower center", ncols=min(3, len(names)), fontsize=8
        )
    figure.savefig(path, dpi=100)


def summarize_sweep(
    sweep_dir: str | Path,
    metrics: tuple[str, ...] = METRICS,
    optimized_metric: str | None = "val/rewards/accuracies",
    metrics_file: str = "csv/metrics.csv",
) -> list[JobResult]:
    """Write ``summary.csv``, ``summary.md`` and ``val_curves.png`` into ``sweep_dir``.

    Args:
        sweep_dir: The multirun's directory (``hydra.sweep.dir``).
        metrics: Metrics whose final values form the table columns and the plot panels.
        optimized_metric: Also report its best value (max, or min for a ``loss``).
        metrics_file: Each job's CSV log, relative to the job directory.

    Returns:
        The jobs read, in job order.
    """
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir, tuple(metrics), metrics_file)
    header, rows = summary_rows(jobs, tuple(metrics), optimized_metric)
    write_tables(header, rows, sweep_dir, shared_overrides(jobs), varying_overrides(jobs))
    plot_sweep(jobs, tuple(metrics), sweep_dir / "val_curves.png")
    return jobs


class SweepSummaryCallback(Callback):
    """Hydra callback: :func:`summarize_sweep` into the sweep directory after a multirun.

    Args:
        metrics: Validation metrics to tabulate and plot.
        metrics_file: Each job's CSV log, relative to its directory.
    """

    def __init__(self, metrics: list[str] | None = None, metrics_file: str = "csv/metrics.csv"):
        self.metrics = tuple(metrics or METRICS)
        self.metrics_file = metrics_file

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep that just ended."""
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            log.warning("No sweep summary: the sweep directory %s does not exist", sweep_dir)
            return
        optimized = config.get("optimized_metric")
        jobs = summarize_sweep(sweep_dir, self.metrics, optimized, self.metrics_file)
        log.info("Sweep summary of %d jobs written to %s", len(jobs), sweep_dir / "summary.md")
