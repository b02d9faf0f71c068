"""``python train.py``, stopped at a chosen point so that a test can kill it there.

``python tests/scripts/train_until.py POINT MARKER [HYDRA OVERRIDES...]`` runs ``train.py``
with the overrides. When the run reaches POINT it writes MARKER and waits (the test then
sends SIGKILL); POINT ``none`` runs to the end. Points, N an optimizer step count:

- ``step:N``: inside the optimizer step after N completed ones (backward done, weights not
  yet updated);
- ``validation:N``: in the validation after step N, its first batch done;
- ``write:N``: half way through writing ``last.ckpt`` at step N (the temporary beside it
  holds half the bytes);
- ``nospace:N``: writing ``last.ckpt`` at step N fails as a full disk does (no pause).
"""

from __future__ import annotations

import errno
import io
import os
import runpy
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from lightning_dpo import training

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"


def pause(marker: Path) -> None:
    """Say where the run is and wait to be killed."""
    marker.write_text("paused")
    time.sleep(600)
    raise SystemExit("not killed within 10 minutes")


class PauseAt(Callback):
    """Pauses inside an optimizer step or a validation."""

    def __init__(self, kind: str, step: int, marker: Path) -> None:
        self.kind, self.step, self.marker = kind, step, marker

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # noqa: D102
        if self.kind == "step" and trainer.global_step == self.step:
            pause(self.marker)

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):  # noqa: D102
        at_step = trainer.global_step == self.step and not trainer.sanity_checking
        if self.kind == "validation" and at_step:
            pause(self.marker)


def break_last_write(kind: str, step: int, marker: Path) -> None:
    """The write of ``last.ckpt`` at ``step`` pauses half way (``write``) or fails (``nospace``)."""
    save = torch.save

    def save_then_break(obj, file, *args, **kwargs):
        name = getattr(file, "name", "")
        is_last = isinstance(name, str) and Path(name).name.startswith(".last.ckpt.partial-")
        if not (is_last and isinstance(obj, dict) and obj.get("global_step") == step):
            return save(obj, file, *args, **kwargs)
        if kind == "nospace":
            raise OSError(errno.ENOSPC, "No space left on device")
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: buffer.tell() // 2])
        file.flush()
        pause(marker)

    torch.save = save_then_break


def main() -> None:
    """Install the pause point, then run ``train.py`` with the overrides."""
    point, marker, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if point != "none":
        kind, step = point.split(":")[0], int(point.split(":")[1])
        if kind in ("write", "nospace"):
            break_last_write(kind, step, marker)
        else:
            arguments = training.trainer_arguments

            def with_pause(cfg, callbacks):
                return arguments(cfg, [*callbacks, PauseAt(kind, step, marker)])

            training.trainer_arguments = with_pause
    sys.argv = [os.fspath(TRAIN_PY), *overrides]
    runpy.run_path(os.fspath(TRAIN_PY), run_name="__main__")


if __name__ == "__main__":
    main()
