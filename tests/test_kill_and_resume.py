"""SIGKILL ``train.py`` mid-step, mid-validation, mid-checkpoint write; resume from ``last.ckpt``.

Each point is reached deterministically (``tests/scripts/train_until.py`` pauses there and
the test kills the paused process). The resumed run must end with the uninterrupted
run's weights, bitwise: the data plan resumes inside an epoch, the optimizer state and
the reference travel in the checkpoint, and the tiny policy has no dropout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_dpo.checkpoint_checks import check_checkpoint_file
from tests.helpers import LEAN_OVERRIDES, REPO, script_env

pytestmark = pytest.mark.slow

DRIVER = REPO / "tests" / "scripts" / "train_until.py"
INTERVAL = 4
MAX_STEPS = 12
RUN = [
    "logger=none",
    *LEAN_OVERRIDES,
    "seed=0",
    "data.source.num_train=64",  # 8 steps an epoch: the run crosses an epoch boundary
    "data.source.num_val=16",
    "data.batches.batch_size=8",
    f"trainer.max_steps={MAX_STEPS}",
    f"trainer.val_check_interval={INTERVAL}",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
]


def start(run_dir: Path, point: str, *overrides: str) -> subprocess.Popen:
    """``train_until.py POINT`` writing into ``run_dir``, with the test run's settings."""
    command = [
        sys.executable,
        os.fspath(DRIVER),
        point,
        os.fspath(run_dir / "paused"),
        f"hydra.run.dir={run_dir}",
        *RUN,
        *overrides,
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=script_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    """Wait for a run to end; its output (the test fails with it when the run failed)."""
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def kill_at(run_dir: Path, point: str, *overrides: str) -> None:
    """Start a run, wait until it pauses at ``point``, SIGKILL it."""
    process = start(run_dir, point, *overrides)
    marker = run_dir / "paused"
    deadline = time.monotonic() + 180
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {point}:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, f"{point} not reached in 180 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    marker.unlink()


def saved(path: Path) -> dict:
    """A checkpoint, loaded."""
    return torch.load(path, map_location="cpu", weights_only=False)


def partials(run_dir: Path) -> list[str]:
    """Temporaries of checkpoint writes in the run's checkpoint folder."""
    return [name for name in os.listdir(run_dir / "checkpoints") if ".partial-" in name]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the run never killed."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    finish(start(run_dir, "none"))
    checkpoint = saved(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == MAX_STEPS
    return checkpoint["state_dict"]


EVERY_STEP = "callbacks.model_checkpoint.last_every_minutes=0"
"""The clock interval at 0: ``last.ckpt`` at the end of every optimizer step."""


@pytest.mark.parametrize(
    ("point", "options", "killed_in_step", "expected_in_last", "interval"),
    [
        ("step:6", [], 7, 4, INTERVAL),
        ("validation:8", [], 8, 4, INTERVAL),
        ("write:8", [], 8, 4, INTERVAL),
        ("step:6", [EVERY_STEP], 7, 6, 1),
    ],
    ids=["mid-step", "mid-validation", "mid-checkpoint-write", "mid-step-clock-interval"],
)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_weights(
    tmp_path, uninterrupted, point, options, killed_in_step, expected_in_last, interval
):
    kill_at(tmp_path, point, *options)
    last = tmp_path / "checkpoints" / "last.ckpt"
    check_checkpoint_file(last)  # loads: never half written
    at_kill = saved(last)["global_step"]
    assert at_kill == expected_in_last  # the last save point before the kill
    assert killed_in_step - at_kill <= interval  # at most one interval of work lost
    assert len(partials(tmp_path)) == (1 if point.startswith("write") else 0)

    output = finish(start(tmp_path, "none", f"ckpt_path={last}", *options))
    assert "left by a checkpoint write that was killed" in output or not point.startswith("write")
    assert partials(tmp_path) == []
    resumed = saved(last)
    assert resumed["global_step"] == MAX_STEPS
    assert resumed["state_dict"].keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_a_full_disk_during_a_checkpoint_stops_in_one_line_and_keeps_last_ckpt(tmp_path):
    process = start(tmp_path, "nospace:8")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "CheckpointWriteError: could not write checkpoint last.ckpt in " in output
    assert "No space left on device (" in output
    assert "free there; the previous one is kept)" in output
    assert "Traceback" not in output
    assert saved(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert partials(tmp_path) == []
