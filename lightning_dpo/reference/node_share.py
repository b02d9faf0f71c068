"""One host copy of the reference per node: tensors in shared memory, mapped by every local rank.

Under DDP every rank holds the same reference. Instead of one host snapshot per rank
(``local_world_size`` copies of the trainable weights per node), the node's local rank 0
creates one ``/dev/shm`` segment, every local rank maps it, and the segment is unlinked as
soon as they all have: nothing is left in ``/dev/shm`` after a normal exit, an exception
or a killed rank (the mapping lives on in the processes that have it). Only local rank 0
writes the weights (once, then at each TR-DPO update), between barriers; the others read.

A segment the node's local rank 0 created but could not unlink (killed in the moment
between creating and unlinking it) is named after that process: the next run removes the
segments of processes that no longer exist.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SHM_DIR = Path("/dev/shm")
PREFIX = "lightning_dpo_reference"
ALIGNMENT = 64
"""Byte alignment of each tensor in a segment (a cache line; any dtype's element size)."""

TensorSpec = tuple[tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class NodeShare:
    """How the ranks of one node share a host segment.

    Attributes:
        local_rank: This process's rank on its node (0 creates and writes the segment).
        local_world: Processes on the node.
        node_rank: The node's rank (several "nodes" may share one machine).
        token: The same random word on every rank of the job (names its segments).
        barrier: Waits for every rank of the job.
        pin: Register the segment with CUDA as pinned memory (for asynchronous copies).
    """

    local_rank: int
    local_world: int
    node_rank: int
    token: str
    barrier: Callable[[], None]
    pin: bool = False

    @property
    def writer(self) -> bool:
        """Whether this process writes the node's segment."""
        return self.local_rank == 0


def job_token() -> str:
    """A fresh random word for a job's segment names (draw it on one rank, broadcast it)."""
    return secrets.token_hex(6)


def segment_path(share: NodeShare, pid: int) -> Path:
    """The segment of ``share``'s node, created by process ``pid``."""
    return SHM_DIR / f"{PREFIX}-{share.token}-node{share.node_rank}-pid{pid}"


def remove_orphans(directory: Path = SHM_DIR) -> list[Path]:
    """Unlink this package's segments whose creating process is gone; return them."""
    removed = []
    for path in directory.glob(f"{PREFIX}-*-pid*"):
        match = re.search(r"-pid(\d+)$", path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _offsets(specs: Mapping[str, TensorSpec]) -> tuple[dict[str, int], int]:
    """Each tensor's aligned byte offset in the segment, and the segment's size."""
    offsets, position = {}, 0
    for name, (shape, dtype) in specs.items():
        offsets[name] = position
        position += -(-_nbytes(shape, dtype) // ALIGNMENT) * ALIGNMENT
    return offsets, max(position, ALIGNMENT)


def _views(storage: Any, specs: Mapping[str, TensorSpec], offsets: dict[str, int]) -> dict:
    """Tensors of ``specs`` laid over ``storage`` at ``offsets``."""
    raw = torch.empty(0, dtype=torch.uint8).set_(storage)
    views = {}
    for name, (shape, dtype) in specs.items():
        start = offsets[name]
        views[name] = raw[start : start + _nbytes(shape, dtype)].view(dtype).view(shape)
    return views


def shared_tensors(
    specs: Mapping[str, TensorSpec],
    share: NodeShare,
    fill: Callable[[dict[str, Tensor]], None],
) -> dict[str, Tensor]:
    """Tensors of ``specs`` in one segment shared by the node's ranks, filled by ``fill``.

    Every rank of the job must call this together (it waits at barriers). Local rank 0
    creates the segment; every local rank maps it; local rank 0 unlinks it, then fills it
    (``fill`` runs there only), and the others read it once it is filled.

    Args:
        specs: Each tensor's shape and dtype, by name.
        share: The node and ranks.
        fill: Writes the values into the (writer's) tensors.
    """
    offsets, nbytes = _offsets(specs)
    pid = os.getpid() if share.writer else None
    if share.writer:
        remove_orphans()
        storage = torch.UntypedStorage.from_file(str(segment_path(share, pid)), True, nbytes)
    share.barrier()
    if not share.writer:
        (path,) = SHM_DIR.glob(f"{PREFIX}-{share.token}-node{share.node_rank}-pid*")
        storage = torch.UntypedStorage.from_file(str(path), True, nbytes)
    share.barrier()
    views = _views(storage, specs, offsets)
    if share.pin:  # the mapping stays registered for the process's life
        torch.cuda.cudart().cudaHostRegister(storage.data_ptr(), nbytes, 0)
    if share.writer:
        segment_path(share, pid).unlink()
        fill(views)
    share.barrier()
    return views


def mapped_pss_bytes(prefix: str = PREFIX, pid: int | str = "self") -> int:
    """Proportional set size of a process's mappings of this package's segments, in bytes.

    PSS divides each shared page among the processes that map it: summed over a node's
    ranks it is the segment's size once, however many ranks map it.
    """
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = prefix in line
        elif inside and line.startswith("Pss:"):
            total += int(line.split()[1]) * 1024
    return total
