"""Objectives that score each response's log-ratio ``pi - ref`` on its own, not only the margin.

``pi``/``ref`` are summed response log-probs, ``c``/``r`` the chosen and rejected responses and
``rho_c = pi_c - ref_c``, ``rho_r = pi_r - ref_r``. Anchoring each response lets these losses say
whether the chosen likelihood itself should rise or fall, which the margin-only losses cannot.
It also means f-DPO's f-divergences do not apply: ``beta f'(pi/ref)`` is a reward only up to
``beta log Z(x)``, which cancels in a margin but not in one response's score, so
:class:`~lightning_dpo.losses.PreferenceLoss` refuses them here (as TRL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dpo.losses.core import LossOutput, PairLogps, logratios, output


def nca_pair_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Noise Contrastive Alignment (NCA), pairwise preference form.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards",
    https://arxiv.org/abs/2402.05369. With rewards ``r = beta * rho``:
    ``-logsigmoid(r_c) - 1/2 logsigmoid(-r_c) - 1/2 logsigmoid(-r_r)``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    reward_c, reward_r = beta * chosen, beta * rejected
    losses = -F.logsigmoid(reward_c) - 0.5 * F.logsigmoid(-reward_c) - 0.5 * F.logsigmoid(-reward_r)
    return output(losses, chosen, rejected, beta)


def bco_pair_loss(logps: PairLogps, beta: float, delta: float | Tensor = 0.0) -> LossOutput:
    """Binary Classifier Optimisation (BCO) on pairs: chosen is class 1, rejected class 0.

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
    https://arxiv.org/abs/2404.04656. With rewards ``r = beta * rho`` and the reward shift
    ``delta``: ``-logsigmoid(r_c - delta) - logsigmoid(-(r_r - delta))``.
    :class:`~lightning_dpo.losses.PreferenceLoss` passes the running mean of the rewards of the
    training batches seen so far as ``delta``, the paper's reward shift (TRL 1.16's
    ``loss_type="bco_pair"`` uses ``delta = 0``); here it is an argument, so the function stays
    pure.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        delta: Reward shift (a float or a scalar tensor; no gradient flows into it).

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    if isinstance(delta, Tensor):
        delta = delta.detach().to(chosen)
    losses = -F.logsigmoid(beta * chosen - delta) - F.logsigmoid(-(beta * rejected - delta))
    return output(losses, chosen, rejected, beta)


def sppo_hard_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Self-Play Preference Optimisation with hard labels.

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment",
    https://arxiv.org/abs/2405.00675, eq. (3.6) with ``eta = 1 / beta`` and the win probability
    replaced by the label (1 for chosen, 0 for rejected):
    ``(rho_c - 1/(2 beta))^2 + (rho_r + 1/(2 beta))^2``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0; the targets are ``+-1/(2 beta)``.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    target = 1.0 / (2.0 * beta)
    losses = (chosen - target) ** 2 + (rejected + target) ** 2
    return output(losses, chosen, rejected, beta)


def apo_zero_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Anchored Preference Optimisation, APO-zero: push the chosen up and the rejected down.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
    https://arxiv.org/abs/2408.06266: ``(1 - sigmoid(beta rho_c)) + sigmoid(beta rho_r)``, for
    chosen responses better than the model's own outputs.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    losses = torch.sigmoid(-beta * chosen) + torch.sigmoid(beta * rejected)
    return output(losses, chosen, rejected, beta)


def apo_down_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Anchored Preference Optimisation, APO-down: push the chosen down, the rejected further.

    D'Oosterlinck et al. 2024, https://arxiv.org/abs/2408.06266:
    ``sigmoid(beta rho_c) + (1 - sigmoid(beta (rho_c - rho_r)))``, for chosen responses worse
    than the model's own outputs: the chosen likelihood falls, the margin still rises.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    losses = torch.sigmoid(beta * chosen) + torch.sigmoid(-beta * (chosen - rejected))
    return output(losses, chosen, rejected, beta)
