"""Fingerprints of named tensors, so that what a checkpoint holds is verified on load.

One non-cryptographic 128-bit hash (xxHash's XXH3, about 17x faster than SHA-256 on one
core: ``bench/bench_checkpoint_integrity.py``) over each tensor's name, shape, dtype and
bytes. It detects corruption (a truncated copy, flipped or overwritten bytes), not
tampering.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import xxhash
from torch import Tensor

try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor
except ImportError:  # torch 2.4
    from torch.distributed._tensor import DTensor

ALGORITHM = "xxh3_128"
"""Named in every fingerprint (``"xxh3_128:<hex>"``), so a change of algorithm is explicit."""
_READ_CHUNK = 1 << 24


def is_sharded(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a sharded (DTensor) tensor, whose bytes live on several ranks."""
    return isinstance(tensor, DTensor)


def _host_bytes(tensor: Tensor) -> memoryview:
    """The bytes of a tensor (a sharded one gathered whole) in host memory."""
    tensor = tensor.detach()
    if is_sharded(tensor):
        tensor = tensor.full_tensor()
    tensor = tensor.cpu().contiguous().reshape(-1)
    return memoryview(tensor.view(torch.uint8).numpy())


def _update(digest: Any, name: str, tensor: Tensor) -> None:
    digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
    digest.update(_host_bytes(tensor))


def tensor_fingerprint(name: str, tensor: Tensor) -> str:
    """Fingerprint of one named tensor (name, shape, dtype and bytes)."""
    digest = xxhash.xxh3_128()
    _update(digest, name, tensor)
    return f"{ALGORITHM}:{digest.hexdigest()}"


def tensors_fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """One fingerprint over named tensors, independent of their order.

    A sharded (DTensor) entry is hashed whole (``full_tensor``), so every rank of a
    sharded model gets the same fingerprint.
    """
    digest = xxhash.xxh3_128()
    for name in sorted(tensors):
        _update(digest, name, tensors[name])
    return f"{ALGORITHM}:{digest.hexdigest()}"


def named_tensors(tree: Any, prefix: str = "") -> dict[str, Tensor]:
    """Every tensor inside nested dicts, lists and tuples, by its dotted key path.

    ``{"state": {0: {"exp_avg": t}}}`` gives ``{"state.0.exp_avg": t}``.
    """
    if isinstance(tree, Tensor):
        return {prefix: tree}
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {}
    found: dict[str, Tensor] = {}
    for key, value in items:
        found.update(named_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def fingerprints(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """One :func:`tensor_fingerprint` per named tensor."""
    return {name: tensor_fingerprint(name, tensor) for name, tensor in tensors.items()}


def first_mismatch(expected: Mapping[str, str], tensors: Mapping[str, Tensor]) -> str | None:
    """What differs between recorded fingerprints and tensors, or ``None`` when all match.

    Returns:
        A short description naming the first missing, unexpected or changed tensor.
    """
    missing = sorted(set(expected) - set(tensors))
    if missing:
        return f"tensor '{missing[0]}' is missing ({len(missing)} missing in all)"
    extra = sorted(set(tensors) - set(expected))
    if extra:
        return f"tensor '{extra[0]}' was not fingerprinted when saved ({len(extra)} in all)"
    changed = [
        name
        for name in sorted(expected)
        if tensor_fingerprint(name, tensors[name]) != expected[name]
    ]
    if changed:
        return f"tensor '{changed[0]}' does not match its fingerprint ({len(changed)} in all)"
    return None


def file_fingerprint(path: Path) -> str:
    """xxh3-128 of a file's bytes, as ``"xxh3_128:<hex>"``."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return f"{ALGORITHM}:{digest.hexdigest()}"


def write_manifest(directory: Path, manifest: str, record: Mapping[str, Any] | None = None) -> None:
    """Fingerprint every file of ``directory`` into its ``manifest`` file (JSON).

    Args:
        directory: A finished cache entry, before it is renamed into place.
        manifest: The manifest's file name inside ``directory``.
        record: What else to keep in the manifest (its source, say).
    """
    files = {
        path.name: file_fingerprint(path)
        for path in sorted(directory.iterdir())
        if path.name != manifest
    }
    (directory / manifest).write_text(json.dumps({**(record or {}), "files": files}, indent=1))


def directory_problem(directory: Path, manifest: str) -> str | None:
    """What is wrong with a directory written by :func:`write_manifest`, or ``None``.

    Returns:
        The manifest missing or unreadable, files missing or added, or the first file whose
        bytes do not match their fingerprint, named by path.
    """
    path = directory / manifest
    if not path.is_file():
        return f"{path} is missing"
    try:
        expected = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"{path} is unreadable ({error})"
    found = sorted(p.name for p in directory.iterdir() if p.name != manifest)
    if found != sorted(expected):
        return f"its files {found} are not the ones written {sorted(expected)}"
    for name, fingerprint in sorted(expected.items()):
        if file_fingerprint(directory / name) != fingerprint:
            return f"{directory / name} does not match its fingerprint"
    return None


class FingerprintMismatch(RuntimeError):
    """Tensors that do not match the fingerprints saved with them (a corrupt checkpoint)."""


CHECKPOINT_KEY = "lightning_dpo_fingerprints"
"""Where a checkpoint keeps the fingerprints of its weights and optimizer state."""
CHECKPOINT_SECTIONS = ("state_dict", "optimizer_states")
"""The parts of a Lightning checkpoint that are fingerprinted, tensor by tensor."""


def _checkpoint_tensors(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    sections = {name: checkpoint[name] for name in CHECKPOINT_SECTIONS if name in checkpoint}
    return named_tensors(sections)


def stamp_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Record a fingerprint of every weight and optimizer tensor in ``checkpoint``.

    Sharded (DTensor) checkpoints are left unstamped: hashing them whole would gather
    every tensor on every rank at every save.

    Returns:
        Whether the checkpoint was stamped.
    """
    tensors = _checkpoint_tensors(checkpoint)
    if any(is_sharded(tensor) for tensor in tensors.values()):
        return False
    checkpoint[CHECKPOINT_KEY] = fingerprints(tensors)
    return True


def verify_checkpoint(checkpoint: Mapping[str, Any], where: str) -> bool:
    """Check the weights and optimizer state against the fingerprints saved with them.

    Args:
        checkpoint: A loaded Lightning checkpoint.
        where: The checkpoint's path (or a description), for the message.

    Returns:
        ``False`` when the checkpoint carries no fingerprints (nothing to verify), else
        ``True``.

    Raises:
        FingerprintMismatch: Naming the first tensor that is missing, unexpected or changed.
    """
    expected = checkpoint.get(CHECKPOINT_KEY)
    if expected is None:
        return False
    problem = first_mismatch(expected, _checkpoint_tensors(checkpoint))
    if problem is not None:
        raise FingerprintMismatch(
            f"{where} is corrupt: {problem}. Resume from another checkpoint (the best one, "
            "or an earlier copy) or start the run anew."
        )
    return True
