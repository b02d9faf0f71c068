"""Shared fixtures: a tiny tokenizer, tiny policies, batches (helpers live in ``helpers.py``)."""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess

import pytest
import torch

from lightning_dpo.data import build_char_tokenizer
from lightning_dpo.policy import add_lora, build_tiny_llama
from tests.helpers import TINY_POLICY, BracketCount, make_bare_trainer, small_datamodule


def pytest_configure(config):
    """Under pytest-xdist, share the cores between the workers (and the processes they start).

    Two workers each running 2 torch threads on 2 cores spin against each other: some tests
    then take 20x longer. ``OMP_NUM_THREADS``, where set, is left as it is.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request, monkeypatch):
    """A test that starts a process is marked ``slow``, so that ``-m "not slow"`` stays quick.

    Outside ``slow`` tests, starting a subprocess or a ``multiprocessing`` process fails the
    test with a message naming the marker.
    """
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*_args, **_kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def tiny_policy(tokenizer):
    torch.manual_seed(0)
    return build_tiny_llama(tokenizer, **TINY_POLICY)


@pytest.fixture
def lora_policy(tokenizer):
    torch.manual_seed(0)
    base = build_tiny_llama(tokenizer, **TINY_POLICY)
    return add_lora(base, r=4, lora_alpha=8)


@pytest.fixture
def brackets():
    """Each reference callback's brackets (``brackets.of(callback)``)."""
    return BracketCount()


@pytest.fixture
def bare_trainer(tmp_path):
    """:func:`make_bare_trainer` under the test's ``tmp_path``: ``bare_trainer(callbacks, ...)``."""

    def build(callbacks: list, max_steps: int = 5, **kwargs):
        return make_bare_trainer(tmp_path, callbacks, max_steps, **kwargs)

    return build


@pytest.fixture
def batch(tokenizer) -> dict[str, torch.Tensor]:
    datamodule = small_datamodule(tokenizer)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))
