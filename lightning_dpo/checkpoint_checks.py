"""A checkpoint to resume from, checked: each problem one line naming the file and what is wrong.

Lightning reads ``ckpt_path`` itself, and a missing, truncated or foreign file ends in
PyTorch's traceback there ("PytorchStreamReader failed reading zip archive"), a checkpoint
of another model in ``load_state_dict``'s many-line report. :func:`check_checkpoint_file`
opens the file first (memory-mapped: the tensors are not read), and
:func:`check_resumable` compares what it holds with the live module before Lightning
loads it. Both raise :class:`~lightning_dpo.errors.CheckpointError`, which ``train.py``
prints as one line without a traceback. A missing reference state is the reference
callback's to refuse (:func:`~lightning_dpo.reference.weights.selection.missing_state`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_dpo.errors import CheckpointError, first_line
from lightning_dpo.integrity import FingerprintMismatch, is_sharded, verify_checkpoint

STATE_KEY = "state_dict"
LIGHTNING_NAMES = ("last", "best", "hpc", "registry")
"""``ckpt_path`` values Lightning resolves itself."""


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Refuse a ``ckpt_path`` that is missing, truncated, or not a Lightning checkpoint.

    A directory (a sharded checkpoint) is left to its strategy's own loader, Lightning's
    names (``last``, ``best``, ``hpc``, ``registry``) and remote URLs to Lightning.

    Raises:
        CheckpointError: Naming the file and what is wrong with it.
    """
    text = os.fspath(path)
    if text in LIGHTNING_NAMES or text.startswith("registry:") or "://" in text:
        return
    file = Path(path)
    if file.is_dir():
        return
    if not file.is_file():
        raise CheckpointError(f"ckpt_path={os.fspath(path)}: no such file")
    try:
        with zipfile.ZipFile(file) as archive:  # torch.save's format: cut short, no directory
            archive.namelist()
        checkpoint = torch.load(file, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:  # whatever zipfile or torch raise for a damaged file
        raise CheckpointError(
            f"ckpt_path={os.fspath(path)} is not a complete PyTorch checkpoint (truncated by a "
            f"full disk or a killed copy, or another kind of file): {first_line(error)}"
        ) from None
    if not isinstance(checkpoint, Mapping) or STATE_KEY not in checkpoint:
        raise CheckpointError(
            f"ckpt_path={os.fspath(path)} is a PyTorch file but not a Lightning checkpoint "
            f"(no '{STATE_KEY}')"
        )


def model_mismatch(saved: Mapping[str, Tensor], live: Mapping[str, Tensor]) -> str | None:
    """The first difference between a checkpoint's weights and the live model's, or ``None``.

    Returns:
        The first missing, unexpected or differently shaped tensor and how many differ.
    """
    missing = sorted(set(live) - set(saved))
    unexpected = sorted(set(saved) - set(live))
    reshaped = sorted(
        name
        for name in set(saved) & set(live)
        if tuple(saved[name].shape) != tuple(live[name].shape)
    )
    if missing:
        return f"it lacks the weight '{missing[0]}' ({len(missing)} missing in all)"
    if unexpected:
        return (
            f"it holds the weight '{unexpected[0]}' this model has not ({len(unexpected)} in all)"
        )
    if reshaped:
        name = reshaped[0]
        return (
            f"its weight '{name}' has shape {tuple(saved[name].shape)}, this model's "
            f"{tuple(live[name].shape)} ({len(reshaped)} differ in all)"
        )
    return None


def check_resumable(checkpoint: Mapping[str, Any], live: Mapping[str, Tensor], where: str) -> bool:
    """Refuse a checkpoint of another model or one whose tensors do not match their fingerprints.

    Args:
        checkpoint: The loaded Lightning checkpoint.
        live: The module's ``state_dict`` (a sharded one is not compared by shape).
        where: The checkpoint's path, for messages.

    Returns:
        Whether the checkpoint carried fingerprints (``False``: loaded unverified).

    Raises:
        CheckpointError: Naming the checkpoint and the first difference.
    """
    sharded = any(is_sharded(tensor) for tensor in live.values())
    problem = None if sharded else model_mismatch(checkpoint.get(STATE_KEY, {}), live)
    if problem is not None:
        raise CheckpointError(
            f"{where} is a checkpoint of another model: {problem}; resume with the model "
            "settings it was written with (model.*), or start a new run"
        )
    try:
        return verify_checkpoint(checkpoint, where)
    except FingerprintMismatch as error:
        raise CheckpointError(str(error)) from None
