"""Crash and resume in fresh processes: the initial reference, the same loss curve."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightning_dpo.data import build_char_tokenizer
from lightning_dpo.policy import build_policy
from tests.helpers import REPO, TINY_POLICY, reference_logps, script_env

pytestmark = pytest.mark.slow  # every test trains in processes of its own

SCRIPT = REPO / "tests" / "scripts" / "train_steps.py"


def _train(*args: str, expect_exit: int = 0) -> None:
    env = script_env()
    command = [sys.executable, str(SCRIPT), *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == expect_exit, result.stderr[-4000:]


@pytest.mark.parametrize("budget", [[], ["--max-tokens", "60"]], ids=["epoch-end", "mid-epoch"])
def test_resumed_process_keeps_initial_reference_and_loss_curve(tmp_path, budget):
    """Checkpoint at step 4, crash at 6, resume in a fresh process: the same run.

    With 8-pair batches step 4 ends an epoch; with packed 60-token batches (about 3 pairs)
    it falls inside one, and the resumed run continues with the batch after it.
    """
    full, resumed, ckpt_dir = tmp_path / "full.pt", tmp_path / "resumed.pt", tmp_path / "ckpt"
    _train("0", "8", str(full), *budget)  # the uninterrupted run
    # A run that checkpoints at step 4 and dies at the start of step 6...
    crash = ["--ckpt-dir", str(ckpt_dir), "--crash-at", "6", *budget]
    _train("0", "8", str(tmp_path / "crashed.pt"), *crash, expect_exit=3)
    # ...resumed in a fresh process whose policy was initialised differently.
    _train("7", "8", str(resumed), "--resume", str(ckpt_dir / "step4.ckpt"), *budget)

    full_run, resumed_run = torch.load(full), torch.load(resumed)
    assert resumed_run["steps"] == [4, 5, 6, 7]
    for ours, theirs in zip(resumed_run["batches"], full_run["batches"][4:], strict=True):
        assert torch.equal(ours["pair_index"], theirs["pair_index"])  # the same order
    # (b) the loss sequence after resume matches the uninterrupted run.
    torch.testing.assert_close(
        torch.tensor(resumed_run["losses"]),
        torch.tensor(full_run["losses"][4:]),
        rtol=1e-5,
        atol=1e-6,
    )
    # (a) the reference is bitwise the initial model, not the resumed weights.
    torch.manual_seed(0)
    initial = build_policy(build_char_tokenizer(), tiny=TINY_POLICY)
    for batch in resumed_run["batches"]:
        assert torch.equal(batch["reference_logps"], reference_logps(initial, batch))
