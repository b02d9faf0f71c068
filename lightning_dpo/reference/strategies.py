"""Which Lightning strategies the reference management supports."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.strategies import (
    DDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    Strategy,
)

from lightning_dpo.reference.node_share import NodeShare, job_token

SUPPORTED_STRATEGIES: tuple[type[Strategy], ...] = (
    SingleDeviceStrategy,
    DDPStrategy,
    ModelParallelStrategy,
)
"""Single device, DDP (one host snapshot per node, shared by its ranks) and FSDP2 via
``ModelParallelStrategy`` (each rank snapshots its local shards)."""


def node_share(trainer: pl.Trainer) -> NodeShare | None:
    """How the ranks of each node share one host snapshot, or ``None`` where they cannot.

    Under DDP with several processes on a node every rank holds the same reference, so the
    node keeps one copy. Every rank of the job must call this together (a broadcast).
    """
    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy) or trainer.num_devices < 2:
        return None
    token = strategy.broadcast(job_token() if trainer.is_global_zero else None, src=0)
    return NodeShare(
        local_rank=strategy.local_rank,
        local_world=trainer.num_devices,
        node_rank=strategy.node_rank,
        token=token,
        barrier=lambda: strategy.barrier("reference_snapshot"),
    )


def check_supported_strategy(strategy: Strategy) -> None:
    """Refuse a strategy whose parameter layout the reference swap has not been built for.

    Raises:
        NotImplementedError: Naming the strategy and the supported ones.
    """
    if isinstance(strategy, SUPPORTED_STRATEGIES):
        return
    supported = ", ".join(cls.__name__ for cls in SUPPORTED_STRATEGIES)
    raise NotImplementedError(
        f"ReferenceSwapCallback does not support {type(strategy).__name__} yet (its "
        f"parameters are flattened or partitioned in ways the swap does not handle). "
        f"Supported: {supported}. For sharded training use ModelParallelStrategy (FSDP2)."
    )
