"""Reward-aware Preference Optimisation (RPO): regress the implicit reward gap onto a measured one.

NVIDIA NeMo-Aligner's RPO, introduced in the Nemotron-4 340B technical report,
https://arxiv.org/abs/2406.11704. Each pair carries ground-truth rewards; with
``g = gt_reward_scale * (chosen_reward - rejected_reward)`` the model's implicit reward gap
``beta * d`` (summed log-ratios, as in DPO) is pulled towards ``g`` under a distance: squared,
or a Bernoulli KL between ``p = sigmoid(beta d)`` and ``q = sigmoid(g)`` in either direction.
Equal rewards (``g = 0``) ask for equal preference (``d = 0``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_dpo.losses.core import LossOutput, PairLogps, bernoulli_kl, logratios, output, upcast


def check_rewards(logps: PairLogps, chosen_reward: Tensor, rejected_reward: Tensor) -> None:
    """Raise if the per-pair rewards do not match the batch shape of the log-probs.

    Args:
        logps: Log-probabilities of the pairs.
        chosen_reward: ``[B]`` ground-truth reward of the chosen responses.
        rejected_reward: ``[B]`` ground-truth reward of the rejected responses.

    Raises:
        ValueError: If either reward's shape differs from ``logps.policy_chosen``'s.
    """
    expected = tuple(logps.policy_chosen.shape)
    for name, reward in (("chosen_reward", chosen_reward), ("rejected_reward", rejected_reward)):
        if tuple(reward.shape) != expected:
            raise ValueError(
                f"{name} must have the same shape as the log-probs {list(expected)}, "
                f"got {list(reward.shape)}"
            )


def reward_gap(
    logps: PairLogps, chosen_reward: Tensor, rejected_reward: Tensor, gt_reward_scale: float
) -> Tensor:
    """Scaled ground-truth reward gap ``g = gt_reward_scale * (r_chosen - r_rejected)``.

    Args:
        logps: Log-probabilities of the pairs (used for the shape check).
        chosen_reward: ``[B]`` ground-truth reward of the chosen responses.
        rejected_reward: ``[B]`` ground-truth reward of the rejected responses.
        gt_reward_scale: Multiplier applied to the reward gap.

    Returns:
        ``[B]`` reward gap, at least float32.
    """
    check_rewards(logps, chosen_reward, rejected_reward)
    return gt_reward_scale * (upcast(chosen_reward) - upcast(rejected_reward))


def rpo_sq_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float = 1.0,
) -> LossOutput:
    """Reward-aware Preference Optimisation with a squared distance.

    NVIDIA NeMo-Aligner's RPO, introduced in the Nemotron-4 340B technical report,
    https://arxiv.org/abs/2406.11704. The implicit reward gap ``beta * d`` (summed log-ratios, as
    in DPO) is regressed onto the scaled ground-truth gap
    ``g = gt_reward_scale * (chosen_reward - rejected_reward)``: loss ``(beta * d - g) ** 2``.

    Args:
        logps: Log-probabilities of the pairs.
        chosen_reward: ``[B]`` ground-truth reward of the chosen responses.
        rejected_reward: ``[B]`` ground-truth reward of the rejected responses.
        beta: Inverse temperature of the implicit reward, > 0.
        gt_reward_scale: Multiplier applied to the ground-truth reward gap.

    Returns:
        Unreduced ``[B]`` losses and detached (summed, DPO-style) rewards.

    Raises:
        ValueError: If the rewards' shape differs from the log-probs'.
    """
    gap = reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = logratios(logps)
    losses = (beta * (chosen - rejected) - gap) ** 2
    return output(losses, chosen, rejected, beta)


def rpo_fwd_kl_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float = 1.0,
) -> LossOutput:
    """Reward-aware Preference Optimisation with the forward Bernoulli KL ``KL(p || q)``.

    NVIDIA NeMo-Aligner's RPO (Nemotron-4 340B report, https://arxiv.org/abs/2406.11704).
    With ``p = sigmoid(beta * d)`` (model preference probability) and ``q = sigmoid(g)``
    (target from the scaled reward gap), the loss is
    ``p * (log p - log q) + (1 - p) * (log(1 - p) - log(1 - q))``, with every log computed by
    ``logsigmoid`` (``log(1 - p) = logsigmoid(-beta * d)``).

    Args:
        logps: Log-probabilities of the pairs.
        chosen_reward: ``[B]`` ground-truth reward of the chosen responses.
        rejected_reward: ``[B]`` ground-truth reward of the rejected responses.
        beta: Inverse temperature of the implicit reward, > 0.
        gt_reward_scale: Multiplier applied to the ground-truth reward gap.

    Returns:
        Unreduced ``[B]`` losses and detached (summed, DPO-style) rewards.

    Raises:
        ValueError: If the rewards' shape differs from the log-probs'.
    """
    gap = reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = logratios(logps)
    logits = beta * (chosen - rejected)
    losses = bernoulli_kl(
        F.logsigmoid(logits), F.logsigmoid(-logits), F.logsigmoid(gap), F.logsigmoid(-gap)
    )
    return output(losses, chosen, rejected, beta)


def rpo_bwd_kl_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float = 1.0,
) -> LossOutput:
    """Reward-aware Preference Optimisation with the backward Bernoulli KL ``KL(q || p)``.

    NVIDIA NeMo-Aligner's RPO (Nemotron-4 340B report, https://arxiv.org/abs/2406.11704).
    With ``p = sigmoid(beta * d)`` and ``q = sigmoid(g)``, the loss is
    ``q * (log q - log p) + (1 - q) * (log(1 - q) - log(1 - p))``, logs via ``logsigmoid``.
    As ``g -> +inf`` (``q -> 1``) it reduces to the DPO loss ``-logsigmoid(beta * d)``.

    Args:
        logps: Log-probabilities of the pairs.
        chosen_reward: ``[B]`` ground-truth reward of the chosen responses.
        rejected_reward: ``[B]`` ground-truth reward of the rejected responses.
        beta: Inverse temperature of the implicit reward, > 0.
        gt_reward_scale: Multiplier applied to the ground-truth reward gap.

    Returns:
        Unreduced ``[B]`` losses and detached (summed, DPO-style) rewards.

    Raises:
        ValueError: If the rewards' shape differs from the log-probs'.
    """
    gap = reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = logratios(logps)
    logits = beta * (chosen - rejected)
    losses = bernoulli_kl(
        F.logsigmoid(gap), F.logsigmoid(-gap), F.logsigmoid(logits), F.logsigmoid(-logits)
    )
    return output(losses, chosen, rejected, beta)
