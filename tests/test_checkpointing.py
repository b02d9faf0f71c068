"""``last.ckpt`` holds the last step: after a plateau, at the end, on an exception or Ctrl-C."""

from __future__ import annotations

import errno
import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lightning_dpo.callbacks.checkpointing import LastStepCheckpoint
from lightning_dpo.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError


class PlateauModule(pl.LightningModule):
    """A linear model whose validation metric never improves after the first validation."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        """Mean square of the outputs."""
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        """Log a constant score."""
        self.log("val/score", 1.0)  # constant: only the first validation enters the top-k

    def configure_optimizers(self):
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        """64 random points, 16 batches an epoch."""
        return DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4)

    def val_dataloader(self):
        """One batch."""
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=4)


class RaiseAt(Callback):
    """Raise ``exception`` when a training batch starts at optimizer step ``step``."""

    def __init__(self, step: int, exception: type[BaseException]) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        """Raise at the chosen step."""
        if trainer.global_step == self.step:
            raise self.exception("stop here")


def _fit(
    tmp_path,
    max_steps: int,
    *callbacks: Callback,
    checkpoint_options: dict | None = None,
    **trainer_options,
) -> LastStepCheckpoint:
    checkpoint = LastStepCheckpoint(
        dirpath=tmp_path, monitor="val/score", mode="max", **(checkpoint_options or {})
    )
    settings = {"val_check_interval": 2, **trainer_options}
    trainer = pl.Trainer(
        max_steps=max_steps,
        check_val_every_n_epoch=None,
        callbacks=[checkpoint, *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **settings,
    )
    trainer.fit(PlateauModule())
    return checkpoint


def _step_of(path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


def test_last_ckpt_is_the_last_step_after_the_metric_plateaus(tmp_path):
    checkpoint = _fit(tmp_path, 12)
    assert _step_of(checkpoint.best_model_path) == 2  # the plateau: nothing better after step 2
    assert _step_of(tmp_path / "last.ckpt") == 12


def test_last_ckpt_is_the_final_step_when_it_was_not_validated(tmp_path):
    _fit(tmp_path, 7)  # validations at 2, 4, 6; the run ends at 7
    assert _step_of(tmp_path / "last.ckpt") == 7


def test_an_exception_leaves_the_last_completed_step_in_last_ckpt(tmp_path):
    with pytest.raises(RuntimeError, match="stop here"):
        _fit(tmp_path, 20, RaiseAt(9, RuntimeError))
    assert _step_of(tmp_path / "last.ckpt") == 9


def test_ctrl_c_leaves_the_last_completed_step_in_last_ckpt(tmp_path):
    with pytest.raises(SystemExit):  # Lightning turns KeyboardInterrupt into exit code 1
        _fit(tmp_path, 20, RaiseAt(5, KeyboardInterrupt))
    assert _step_of(tmp_path / "last.ckpt") == 5


def test_a_failure_before_any_step_writes_no_last_ckpt(tmp_path):
    with pytest.raises(RuntimeError, match="stop here"):
        _fit(tmp_path, 20, RaiseAt(0, RuntimeError))
    assert not (tmp_path / "last.ckpt").exists()


class RaiseOnFitStart(Callback):
    """Fail as a refused resume does: after the checkpoint is restored, before training."""

    def on_fit_start(self, trainer, pl_module):
        """Raise."""
        raise RuntimeError("refused")


def test_a_refused_resume_leaves_the_given_last_ckpt_untouched(tmp_path):
    _fit(tmp_path, 4)
    before = (tmp_path / "last.ckpt").read_bytes()
    checkpoint = LastStepCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max")
    trainer = pl.Trainer(
        max_steps=8,
        callbacks=[checkpoint, RaiseOnFitStart()],
        logger=False,
        enable_progress_bar=False,
    )
    with pytest.raises(RuntimeError, match="refused"):
        trainer.fit(PlateauModule(), ckpt_path=tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == before


class LastAtBatchStart(Callback):
    """The step ``last.ckpt`` holds when each training batch starts (``None``: no file)."""

    def __init__(self, directory, clock: list[float] | None = None, minutes: float = 0.0) -> None:
        self.path, self.clock, self.minutes = directory / "last.ckpt", clock, minutes
        self.seen: list[int | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        """Read ``last.ckpt``; advance the fake clock by ``minutes``."""
        self.seen.append(_step_of(self.path) if self.path.exists() else None)
        if self.clock is not None:
            self.clock[0] += 60 * self.minutes


def test_last_ckpt_follows_the_clock_between_validations(tmp_path, monkeypatch):
    import lightning_dpo.callbacks.checkpointing as checkpointing

    clock = [0.0]
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])
    record = LastAtBatchStart(tmp_path, clock, minutes=0.4)
    options = {"last_every_minutes": 1.0}
    _fit(tmp_path, 10, record, checkpoint_options=options, val_check_interval=100)
    # 0.4 min a step: 1 minute passes at the ends of steps 3, 6 and 9 (counted from 1)
    assert record.seen == [None, None, None, 3, 3, 3, 6, 6, 6, 9]
    assert _step_of(tmp_path / "last.ckpt") == 10  # and the end of fit


def test_without_a_clock_interval_last_ckpt_waits_for_validation(tmp_path):
    record = LastAtBatchStart(tmp_path)
    _fit(tmp_path, 6, record, val_check_interval=4)
    assert record.seen == [None, None, None, None, 4, 4]


def test_the_clock_interval_writes_only_between_optimizer_steps(tmp_path):
    record = LastAtBatchStart(tmp_path)
    options = {"last_every_minutes": 0.0}  # due at every step's end
    checkpoint = _fit(
        tmp_path,
        4,
        record,
        checkpoint_options=options,
        val_check_interval=100,
        accumulate_grad_batches=2,
    )
    # eight micro-batches, two a step: written at the ends of steps 1-3 only, never mid-step
    assert record.seen == [None, None, 1, 1, 2, 2, 3, 3]
    assert checkpoint._last_step_in_last == 4


def test_a_negative_clock_interval_is_refused():
    with pytest.raises(ValueError, match="last_every_minutes must be >= 0 or None, got -1"):
        LastStepCheckpoint(last_every_minutes=-1)


def test_a_full_disk_stops_fit_once_and_keeps_last_ckpt(tmp_path, monkeypatch):
    checkpoint = LastStepCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max")
    settings = {
        "val_check_interval": 2,
        "check_val_every_n_epoch": None,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "plugins": [AtomicCheckpointIO()],
    }
    pl.Trainer(max_steps=2, callbacks=[checkpoint], **settings).fit(PlateauModule())
    before = (tmp_path / "last.ckpt").read_bytes()
    attempts: list[int] = []

    def full(fd):
        attempts.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    checkpoint = LastStepCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max")
    trainer = pl.Trainer(max_steps=6, callbacks=[checkpoint], **settings)
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        trainer.fit(PlateauModule(), ckpt_path=tmp_path / "last.ckpt")
    assert len(attempts) == 1  # no second try from on_exception
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if ".partial-" in p] == []
