"""Two ``train.py`` jobs at once on the same data, token cache and reference cache."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lightning_dpo.data.tokens.cache import MANIFEST
from lightning_dpo.integrity import directory_problem
from lightning_dpo.reference.cache.store import read_verified_table
from tests.helpers import FAST_OVERRIDES, LEAN_OVERRIDES, REPO, script_env


@pytest.mark.slow
def test_two_jobs_sharing_both_caches_finish_with_the_same_reference(tmp_path):
    shared = [
        f"data.tokens.cache_dir={tmp_path / 'tokens'}",
        f"callbacks.reference.logps_cache_dir={tmp_path / 'logps'}",
        "logger=none",
        "seed=0",
        *LEAN_OVERRIDES,
        *FAST_OVERRIDES,
    ]
    jobs = [
        subprocess.Popen(
            [sys.executable, "train.py", f"hydra.run.dir={tmp_path / f'job{index}'}", *shared],
            cwd=REPO,
            env=script_env(OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    for job, output in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, output
        # nothing read half written: neither cache reported an entry that did not verify
        assert "does not verify" not in output and "recomputing and replacing" not in output

    entries = os.listdir(tmp_path / "tokens")
    assert len(entries) == 2  # train and validation texts: one entry each, no temporaries
    for entry in entries:
        assert directory_problem(tmp_path / "tokens" / entry, MANIFEST) is None
    tables = sorted(os.listdir(tmp_path / "logps"))
    assert all(name.endswith(".pt") for name in tables), tables  # no temporaries
    for name in tables:
        read_verified_table(tmp_path / "logps" / name)

    finals = [
        torch.load(tmp_path / f"job{index}" / "checkpoints" / "last.ckpt", weights_only=False)
        for index in range(2)
    ]
    # identical weights after four steps: every reference log-prob both jobs used was equal
    for name, tensor in finals[0]["state_dict"].items():
        assert torch.equal(finals[1]["state_dict"][name], tensor), name
