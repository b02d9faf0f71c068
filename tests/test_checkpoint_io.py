"""Checkpoint writes: atomic, durable, a full disk keeps the previous file and says so."""

from __future__ import annotations

import errno
import os
import socket

import pytest
import torch

from lightning_dpo.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    human_bytes,
    remove_orphaned_partials,
)
from lightning_dpo.training import build
from tests.helpers import FAST_OVERRIDES, LEAN_OVERRIDES, compose_train_config

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def _leftovers(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if ".partial-" in path.name)


def _no_space(*args, **kwargs):
    raise NO_SPACE


def test_a_checkpoint_is_written_whole_and_nothing_else_stays(tmp_path):
    target = tmp_path / "sub" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(5.0), "global_step": 3}, target)
    loaded = torch.load(target, weights_only=False)
    assert torch.equal(loaded["w"], torch.arange(5.0)) and loaded["global_step"] == 3
    assert os.listdir(tmp_path / "sub") == ["last.ckpt"]


def test_a_checkpoint_replaces_the_previous_file_through_a_synced_rename(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, target)
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1]
    )
    io.save_checkpoint({"global_step": 2}, target)
    assert calls == ["fsync", "replace", "fsync"]  # the file, the rename, the folder
    assert torch.load(target, weights_only=False)["global_step"] == 2


@pytest.mark.parametrize("where", ["fsync", "torch.save"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(
    tmp_path, monkeypatch, where
):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(64)}, target)
    before = target.read_bytes()
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _no_space)
    else:  # half the file written, then the disk is full

        def half_then_full(obj, file):
            file.write(before[: len(before) // 2])
            raise NO_SPACE

        monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(CheckpointWriteError) as caught:
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(64)}, target)
    message = str(caught.value)
    assert "\n" not in message
    assert f"could not write checkpoint last.ckpt in {tmp_path}" in message
    assert "No space left on device" in message
    assert " free there; the previous one is kept" in message
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_first_checkpoint_that_fails_says_there_was_none(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(CheckpointWriteError, match="there was none before"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointWriteError, match=f"in {blocker}/checkpoints: .*Not a directory"):
        AtomicCheckpointIO().save_checkpoint({}, blocker / "checkpoints" / "last.ckpt")


def test_ctrl_c_during_a_write_removes_the_temporary_and_stays_ctrl_c(tmp_path, monkeypatch):
    def interrupted(obj, file):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    pid = 4_000_000  # above Linux's pid_max ceiling (2**22): never a live process
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_orphaned_temporaries_of_killed_writes_are_removed_and_no_others(tmp_path):
    host = socket.gethostname()
    orphan = tmp_path / f".last.ckpt.partial-{host}-{_dead_pid()}-0123abcd"
    live = tmp_path / f".last.ckpt.partial-{host}-{os.getpid()}-0123abcd"
    elsewhere = tmp_path / f".last.ckpt.partial-another-host-{_dead_pid()}-0123abcd"
    kept = [live, elsewhere, tmp_path / "step2.ckpt", tmp_path / ".hidden"]
    for path in [orphan, *kept]:
        path.write_bytes(b"x")
    assert remove_orphaned_partials(tmp_path) == [orphan]
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_orphaned_partials(tmp_path / "missing") == []


def test_the_first_write_into_a_folder_removes_its_orphans(tmp_path):
    orphan = tmp_path / f".step4.ckpt.partial-{socket.gethostname()}-{_dead_pid()}-0123abcd"
    orphan.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_human_bytes():
    assert [human_bytes(n) for n in (10, 4096, 812 * 2**20, 1.5 * 2**30)] == [
        "10 B",
        "4 KiB",
        "812 MiB",
        "1.5 GiB",
    ]


def test_the_default_config_builds_a_trainer_that_writes_atomically(tmp_path):
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, *LEAN_OVERRIDES, "logger=none"])
    _, _, trainer = build(cfg)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
