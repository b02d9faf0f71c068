"""Which Lightning strategies the reference management supports."""

from __future__ import annotations

from lightning.pytorch.strategies import (
    DDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    Strategy,
)

SUPPORTED_STRATEGIES: tuple[type[Strategy], ...] = (
    SingleDeviceStrategy,
    DDPStrategy,
    ModelParallelStrategy,
)
"""Single device, DDP (each rank keeps its own snapshot) and FSDP2 via
``ModelParallelStrategy`` (each rank snapshots its local shards)."""


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
