"""Dropout off for a block: every submodule in eval mode, each one's flag restored after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch every submodule to eval mode, then restore each one's previous flag.

    Restores the flags the modules had (not a constant), so a partly frozen model in
    mixed train/eval modes comes back exactly as it was.
    """
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in previous:
            module.training = was_training
