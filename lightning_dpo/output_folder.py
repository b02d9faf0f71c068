"""The run's output folder, checked before Hydra makes it: one line when it cannot be written.

Hydra creates ``hydra.run.dir`` (``hydra.sweep.dir`` for a multirun) before the task runs,
outside ``train.py``'s error report: a folder under a file, on a read-only filesystem or a
full disk ended in Hydra's traceback. :class:`OutputFolderCheck` (a Hydra callback, set in
``conf/hydra/default.yaml``) makes the folder first and writes a probe file in it; a
failure is one line naming the setting, the folder and the reason, and exit code 1.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightning_dpo.errors import first_line


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written, or ``None`` when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return first_line(error)
    return None


def require_writable(setting: str, folder: str) -> None:
    """Exit with one line when ``folder`` (the value of ``setting``) cannot be written.

    Raises:
        SystemExit: With code 1 (``HYDRA_FULL_ERROR=1``: the ``OSError`` with its traceback).
    """
    problem = folder_problem(Path(folder))
    if problem is None:
        return
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise OSError(f"{setting}={folder}: {problem}")
    print(
        f"Error: {setting}={folder}: the output folder cannot be written ({problem}); "
        f"choose another with {setting}=...",
        file=sys.stderr,
    )
    raise SystemExit(1)


class OutputFolderCheck(Callback):
    """Checks ``hydra.run.dir`` (or ``hydra.sweep.dir``) before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run: its ``hydra.run.dir``."""
        require_writable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep: its ``hydra.sweep.dir``."""
        require_writable("hydra.sweep.dir", config.hydra.sweep.dir)
