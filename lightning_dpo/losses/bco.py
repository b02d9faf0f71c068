"""``bco_pair`` with its state: the running mean of the rewards (the BCO paper's shift)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_dpo.losses.anchored import bco_pair_loss
from lightning_dpo.losses.core import LossOutput, PairLogps, logratios


class BcoPair(nn.Module):
    """:func:`~lightning_dpo.losses.bco_pair_loss` shifted by the running mean of the rewards.

    Jung et al. 2024, https://arxiv.org/abs/2404.04656: the reward shift ``delta`` is the
    mean over the training batches seen so far of each batch's mean reward ``beta * rho``
    (TRL 1.16's ``bco_pair`` has no shift; ``bco_pair_loss(..., delta=0)`` is TRL's). The
    mean and the batch count are buffers, so they follow the module to its device and into
    checkpoints. Updated in training mode only; in eval mode the stored mean is read, or
    the batch's own mean before any training batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, logps: PairLogps, beta: float) -> LossOutput:
        """``bco_pair_loss`` with ``delta`` the running mean (updated first in training mode)."""
        return bco_pair_loss(logps, beta=beta, delta=self.delta(logps, beta))

    def delta(self, logps: PairLogps, beta: float) -> Tensor:
        """The reward shift for this batch (see the class docstring)."""
        chosen, rejected = logratios(logps)
        batch_mean = (beta * torch.cat([chosen, rejected])).mean().detach()
        mean: Tensor = self.mean
        if self.training:
            self.batches += 1
            mean += (batch_mean.to(mean) - mean) / self.batches
        elif int(self.batches) == 0:
            return batch_mean
        return mean.to(batch_mean)
