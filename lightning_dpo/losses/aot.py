"""Alignment via Optimal Transport (AOT): distributional preference over the whole batch.

Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
https://arxiv.org/abs/2406.05882. AOT asks the distribution of chosen scores to dominate the
distribution of rejected scores (first-order stochastic dominance). In one dimension the optimal
transport plan matches quantiles, so both score vectors are sorted across the batch and the
DPO (optionally label-smoothed) loss is applied to the sorted differences.

Note:
    Entry ``i`` of the returned losses belongs to the ``i``-th *quantile*, not to the ``i``-th
    pair: only the mean over the batch is meaningful, and per-pair weights (WPO) do not apply.
    The rewards are per pair, in the input order.
"""

from __future__ import annotations

from torch import Tensor

from lightning_dpo.losses.core import (
    LossOutput,
    PairLogps,
    logratios,
    output,
    smoothed_sigmoid_loss,
    upcast,
)


def _sorted(x: Tensor) -> Tensor:
    """``x`` sorted ascending (differentiable: a gather)."""
    return x.sort(dim=-1).values


def aot_loss(logps: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Paired AOT: the policy's margins dominate the reference's margins.

    Sorts the policy margins ``pi_c - pi_r`` and the reference margins ``ref_c - ref_r``
    separately; with ``delta_i = sorted(pi_c - pi_r)_i - sorted(ref_c - ref_r)_i`` the loss is
    ``-(1 - eps) logsigmoid(beta delta_i) - eps logsigmoid(-beta delta_i)``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        label_smoothing: ``eps`` in ``[0, 0.5)``.

    Returns:
        ``[B]`` per-quantile losses and detached per-pair rewards.
    """
    chosen, rejected = logratios(logps)
    policy_margin = upcast(logps.policy_chosen) - upcast(logps.policy_rejected)
    reference_margin = upcast(logps.reference_chosen) - upcast(logps.reference_rejected)
    delta = _sorted(policy_margin) - _sorted(reference_margin)
    return output(smoothed_sigmoid_loss(beta * delta, label_smoothing), chosen, rejected, beta)


def aot_unpaired_loss(logps: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Unpaired AOT: the chosen log-ratios dominate the rejected log-ratios.

    Sorts the chosen log-ratios ``pi_c - ref_c`` and the rejected log-ratios ``pi_r - ref_r``
    separately (the pairing is not used); with ``delta_i = sorted(rho_c)_i - sorted(rho_r)_i``
    the loss is ``-(1 - eps) logsigmoid(beta delta_i) - eps logsigmoid(-beta delta_i)``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        label_smoothing: ``eps`` in ``[0, 0.5)``.

    Returns:
        ``[B]`` per-quantile losses and detached per-pair rewards.
    """
    chosen, rejected = logratios(logps)
    delta = _sorted(chosen) - _sorted(rejected)
    return output(smoothed_sigmoid_loss(beta * delta, label_smoothing), chosen, rejected, beta)
