"""Checkpoint writes that a kill or a full disk never leave half done.

Lightning's ``TorchCheckpointIO`` (2.6) serialises the checkpoint into memory and
moves it over the target from a temporary file in the *system* temporary directory:
not atomic when that directory is on another filesystem (a copy), never fsynced, and
a killed write leaves its temporary behind (Lightning issues #19970, #21431).
:class:`AtomicCheckpointIO` writes the file beside its target instead, streams it
there (no second copy of the checkpoint in memory), fsyncs it, renames it over the
target with ``os.replace`` and fsyncs the directory. Until the rename the previous
file is untouched; after it, the new one is complete.

Set by ``conf/trainer/default.yaml`` (``trainer.plugins``); in a Trainer of your own::

    Trainer(plugins=[AtomicCheckpointIO()], ...)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lightning_dpo.errors import CheckpointError, first_line

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
"""In the name of a checkpoint being written: ``.last.ckpt.partial-<host>-<pid>-<random>``."""

_PARTIAL = re.compile(r"^\..+\.partial-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written; the previous file of that name is kept."""


def human_bytes(count: float) -> str:
    """``count`` bytes as ``"1.5 GiB"``, ``"812 MiB"`` or ``"4 KiB"``."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def free_space(directory: Path) -> str:
    """The space left where ``directory`` is (or would be), for messages, or ``"unknown"``."""
    for folder in (directory, *directory.parents):
        if folder.is_dir():
            try:
                return human_bytes(shutil.disk_usage(folder).free)
            except OSError:
                break
    return "unknown"


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_orphaned_partials(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed writes left in ``directory``.

    A temporary is an orphan when it was written on this host by a process that is no
    longer running; those of live processes and of other hosts (a shared filesystem) are
    left alone.

    Returns:
        The files removed.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    host = socket.gethostname()
    for path in folder.iterdir():
        match = _PARTIAL.match(path.name)
        if match is None or match["host"] != host or _process_is_alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
        log.warning("Removed %s, left by a checkpoint write that was killed", path)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable, where the filesystem can.

    Best effort: some filesystems refuse to open or sync a folder (``EINVAL``); the file
    itself is then complete and in place, only the rename's durability is the OS's.
    """
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as error:
        log.debug("fsync of %s refused: %s", directory, error)
    finally:
        os.close(handle)


def write_atomically(checkpoint: dict[str, Any], target: Path) -> None:
    """``torch.save`` ``checkpoint`` to ``target`` through a synced temporary beside it.

    Raises:
        CheckpointWriteError: The write failed (a full disk, a read-only folder, ...): one
            line naming the folder, what failed and the space left. ``target`` is as it
            was and the temporary is removed.
    """
    directory = target.parent
    suffix = f"{PARTIAL_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial = directory / f".{target.name}{suffix}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
        _fsync_directory(directory)
    except BaseException as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if not isinstance(error, Exception):  # Ctrl-C, SystemExit: as they are
            raise
        kept = "the previous one is kept" if target.exists() else "there was none before"
        raise CheckpointWriteError(
            f"could not write checkpoint {target.name} in {directory}: {first_line(error)} "
            f"({free_space(directory)} free there; {kept})"
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic and durable.

    Each local checkpoint is written to a temporary file in its own folder, flushed and
    fsynced, renamed over the previous file with ``os.replace``, and the folder fsynced.
    A failure (``OSError`` of a full disk included) removes the temporary, keeps the
    previous file and raises :class:`CheckpointWriteError` (one line, shown by
    ``train.py`` without a traceback). The first write into a folder removes orphaned
    temporaries of killed writes there. Remote paths (``s3://``, ...) go through
    Lightning's own write.
    """

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[Path] = set()

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path``: atomically where ``path`` is local.

        Raises:
            CheckpointWriteError: The write failed; the previous file is kept.
            TypeError: ``storage_options`` given (as ``TorchCheckpointIO``).
        """
        filesystem, local_path = fsspec.core.url_to_fs(os.fspath(path))
        if storage_options is not None or not isinstance(filesystem, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(local_path)
        if target.parent not in self._swept:
            remove_orphaned_partials(target.parent)
            self._swept.add(target.parent)
        write_atomically(checkpoint, target)
