"""The reference at cluster scale, on one machine: one host copy per node, nodes, launchers.

DDP runs are two CPU processes (gloo) of ``tests/distributed/run_reference.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from lightning_dpo.reference.node_share import PREFIX, SHM_DIR, remove_orphans
from tests.helpers import (
    DISTRIBUTED_SCRIPT,
    PAGE,
    REPO,
    initial_policy,
    reference_logps,
    run_two_ranks,
    script_env,
)

pytestmark = pytest.mark.slow  # every test starts processes (ranks, nodes, a launcher)


def test_tr_dpo_updates_the_node_snapshot_once_for_every_rank(tmp_path):
    """A hard TR-DPO copy after every step: the shared snapshot is the final policy."""
    ranks = run_two_ranks("ddp", tmp_path, "--sync-every", "1")
    for rank in ranks:
        assert rank["fingerprint"] == rank["policy_fingerprint"]
    assert sum(rank["shared_pss"] for rank in ranks) <= ranks[0]["snapshot_bytes"] + 2 * PAGE * 8


def test_resume_under_ddp_restores_the_node_snapshot(tmp_path):
    """Checkpoint at step 2, resume a differently initialised policy: the initial reference."""
    checkpoints = tmp_path / "ckpt"
    run_two_ranks("ddp", tmp_path / "first", "--ckpt-dir", str(checkpoints))
    resume = ["--resume", str(checkpoints / "step2.ckpt"), "--init-seed", "7"]
    ranks = run_two_ranks("ddp", tmp_path / "resumed", *resume)
    initial = initial_policy()
    for rank in ranks:
        assert len(rank["batches"]) == 2  # steps 2 and 3
        for batch in rank["batches"]:
            assert torch.equal(batch[rank["key"]], reference_logps(initial, batch))
    copy_bytes = ranks[0]["snapshot_bytes"]
    assert copy_bytes <= sum(rank["shared_pss"] for rank in ranks) <= copy_bytes + 2 * PAGE * 8


def test_no_segment_is_left_when_a_rank_is_killed(tmp_path):
    """Rank 1 SIGKILLed mid-run: the segment its node's rank 0 created is gone.

    Rank 0 is the process started here, and segment names carry their creator's pid: the
    check holds while other jobs (other pytest-xdist workers) make segments of their own.
    """
    command = [sys.executable, str(DISTRIBUTED_SCRIPT), "ddp", str(tmp_path)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    rank0 = subprocess.Popen(
        [*command, "--kill-rank-1-at", "2"], cwd=REPO, env=script_env(), **quiet
    )
    assert rank0.wait(timeout=300) != 0  # the job died with its rank
    assert not list(SHM_DIR.glob(f"{PREFIX}-*-pid{rank0.pid}"))


def test_orphans_of_dead_creators_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    orphan = tmp_path / f"{PREFIX}-abc-node0-pid{finished.pid}"
    alive = tmp_path / f"{PREFIX}-abc-node0-pid{os.getpid()}"
    orphan.touch()
    alive.touch()
    assert dead.returncode == 0
    assert remove_orphans(tmp_path) == [orphan]
    assert alive.exists() and not orphan.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_on_one_machine_share_one_reference(tmp_path):
    """``num_nodes=2`` with one process per node, on localhost: the reference on every rank."""
    env = script_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    command = [sys.executable, str(DISTRIBUTED_SCRIPT), "ddp", str(tmp_path), "--nodes", "2"]
    nodes = [
        subprocess.Popen(
            command, cwd=REPO, env={**env, "NODE_RANK": str(node)}, stderr=subprocess.PIPE
        )
        for node in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [rank["node_rank"] for rank in ranks] == [0, 1]
    initial = initial_policy()
    for rank in ranks:
        assert rank["shared_pss"] == 0  # one process per node: its own copy is the node's
        assert rank["snapshot_bytes"] == ranks[0]["snapshot_bytes"] > 0
        for batch in rank["batches"]:
            assert torch.equal(batch[rank["key"]], reference_logps(initial, batch))
    assert not torch.equal(ranks[0]["batches"][0]["input_ids"], ranks[1]["batches"][0]["input_ids"])


def test_submitit_local_launcher_runs_a_job(tmp_path):
    """Hydra's submitit launcher, for real, through its local executor."""
    overrides = [
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path}",
        "data.source.num_train=64",
        "data.source.num_val=16",
        "data.batches.batch_size=8",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        "logger=none",
        "loss=dpo,ipo",
    ]
    command = [sys.executable, "train.py", "-m", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3  # header and two jobs
    logs = sorted((tmp_path / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
