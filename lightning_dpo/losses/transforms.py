"""Options that apply across objectives, as pure maps ``PairLogps -> PairLogps`` (or weights).

- :func:`reference_free`: log-ratios against zero instead of the reference.
- :func:`token_average`: per-token mean log-probs instead of sums.
- :func:`apply_f_divergence`: replace each log-ratio ``rho = pi - ref`` by ``f'(exp(rho))``, the
  f-DPO generalisation of DPO's reverse-KL constraint.
- :func:`wpo_weights`: WPO's per-pair weights from the policy's own token probabilities.

LD-DPO's down-weighting of the tokens past the shorter response is not here: it must apply to
the policy and the reference alike, so it happens where the log-probs are summed
(:func:`lightning_dpo.logprobs.sequence_logps`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dpo.losses.core import PairLogps, logratios, token_counts, upcast

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
"""Valid ``f_divergence`` names."""

EXP_CAP = 20.0
"""Largest exponent :func:`f_divergence_map` evaluates (``exp(20) ~ 5e8``). Past it (a log-ratio
below ``-20 / alpha``: the policy gives the response ``e^-20`` of the reference's probability or
less) the map is held constant and its gradient is 0, so that ``beta * f'(u)`` and its square
(IPO, SPPO) stay finite in float32. TRL's ``cap_exp`` caps at ``log(float max)`` instead."""


def reference_free(logps: PairLogps) -> PairLogps:
    """The same pairs with the reference log-probs replaced by zeros (``rho = pi``).

    Args:
        logps: Log-probabilities of the pairs.

    Returns:
        A copy whose ``reference_chosen``/``reference_rejected`` are zeros.
    """
    return dataclasses.replace(
        logps,
        reference_chosen=torch.zeros_like(logps.policy_chosen),
        reference_rejected=torch.zeros_like(logps.policy_rejected),
    )


def token_average(logps: PairLogps, needed_by: str = "loss.average_logps") -> PairLogps:
    """The same pairs with every log-prob divided by its response's token count.

    The token counts of the result are 1, so an objective that normalises by length itself
    (IPO) does not divide twice. Counts are clamped to at least 1 (an empty response gives 0).

    Args:
        logps: Log-probabilities of the pairs, with token counts.
        needed_by: What asks for the averaging, named in the error if the counts are missing.

    Returns:
        A copy holding per-token mean log-probs.

    Raises:
        ValueError: If the token counts are missing.
    """
    n_chosen, n_rejected = token_counts(logps, needed_by)
    n_chosen = upcast(n_chosen).clamp(min=1.0)
    n_rejected = upcast(n_rejected).clamp(min=1.0)
    return dataclasses.replace(
        logps,
        policy_chosen=upcast(logps.policy_chosen) / n_chosen,
        policy_rejected=upcast(logps.policy_rejected) / n_rejected,
        reference_chosen=upcast(logps.reference_chosen) / n_chosen,
        reference_rejected=upcast(logps.reference_rejected) / n_rejected,
        chosen_tokens=torch.ones_like(n_chosen),
        rejected_tokens=torch.ones_like(n_rejected),
    )


def f_divergence_map(rho: Tensor, divergence: str, alpha: float = 0.5) -> Tensor:
    """``f'(u)`` at ``u = exp(rho)``, shifted so that ``f'(1) = 0``.

    Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
    Diverse Divergence Constraints", https://arxiv.org/abs/2309.16240 (f-DPO), Table 1:

    - ``reverse_kl``: ``f(u) = u log u``, ``f'(u) - 1 = log u = rho`` (plain DPO).
    - ``forward_kl``: ``f(u) = -log u``, ``f'(u) + 1 = 1 - 1/u = 1 - exp(-rho)``.
    - ``js_divergence``: ``f'(u) = log(2u / (1 + u)) = log 2 + logsigmoid(rho)``.
    - ``alpha_divergence``: ``f'(u) = (1 - u^-alpha) / alpha = (1 - exp(-alpha rho)) / alpha``;
      ``alpha -> 0`` is reverse KL, ``alpha = 1`` forward KL.

    Exponents are capped at :data:`EXP_CAP` (like TRL's ``cap_exp``).

    Args:
        rho: Log-ratios ``pi - ref``.
        divergence: One of :data:`F_DIVERGENCES`.
        alpha: The alpha-divergence coefficient, in ``(0, 1]`` (``alpha_divergence`` only).

    Returns:
        The mapped log-ratios, same shape.

    Raises:
        ValueError: If ``divergence`` is unknown.
    """
    if divergence == "reverse_kl":
        return rho
    if divergence == "js_divergence":
        return math.log(2.0) + F.logsigmoid(rho)
    if divergence == "forward_kl":
        alpha = 1.0
    elif divergence != "alpha_divergence":
        raise ValueError(
            f"loss.f_divergence must be one of {list(F_DIVERGENCES)}, got {divergence!r}"
        )
    return -torch.expm1((-alpha * rho).clamp(max=EXP_CAP)) / alpha


def apply_f_divergence(logps: PairLogps, divergence: str, alpha: float = 0.5) -> PairLogps:
    """The same pairs with each log-ratio ``rho`` replaced by ``f'(exp(rho))``.

    The result carries the mapped log-ratios as its policy log-probs and zeros as its reference,
    so any objective reads ``f'(u_c)`` and ``f'(u_l)`` where it read ``rho_c`` and ``rho_r``; its
    rewards become ``beta f'(u)``, the implicit reward of f-DPO.

    Args:
        logps: Log-probabilities of the pairs.
        divergence: One of :data:`F_DIVERGENCES`.
        alpha: The alpha-divergence coefficient (``alpha_divergence`` only).

    Returns:
        The mapped pairs (unchanged for ``reverse_kl``).
    """
    if divergence == "reverse_kl":
        return logps
    chosen, rejected = logratios(logps)
    mapped_chosen = f_divergence_map(chosen, divergence, alpha)
    mapped_rejected = f_divergence_map(rejected, divergence, alpha)
    return dataclasses.replace(
        logps,
        policy_chosen=mapped_chosen,
        policy_rejected=mapped_rejected,
        reference_chosen=torch.zeros_like(mapped_chosen),
        reference_rejected=torch.zeros_like(mapped_rejected),
    )


def wpo_weights(logps: PairLogps) -> Tensor:
    """Weighted Preference Optimisation's per-pair weight ``min(1, w(y_c) * w(y_r))``.

    Zhou et al. 2024, "WPO: Enhancing RLHF with Weighted Preference Optimization",
    https://arxiv.org/abs/2406.11827, eq. (2): ``log w(y) = mean_t [log p_t - log sum_v p_v^2]``
    under the current policy, so off-policy pairs (unlikely under the policy) weigh less. The
    product is clamped at 1 as in TRL. No gradient flows through the weight.

    Args:
        logps: Pairs carrying ``chosen_weight_logps`` and ``rejected_weight_logps``.

    Returns:
        ``[B]`` detached weights in ``(0, 1]``.

    Raises:
        ValueError: If the WPO log-weights are missing.
    """
    missing = [
        name
        for name in ("chosen_weight_logps", "rejected_weight_logps")
        if getattr(logps, name) is None
    ]
    if missing:
        raise ValueError(
            "loss.use_weighting (WPO) needs the policy's per-response log-weights: set "
            f"PairLogps.chosen_weight_logps and PairLogps.rejected_weight_logps (missing: "
            f"{', '.join(missing)}); PreferenceModule computes them when the loss asks"
        )
    log_weight = upcast(logps.chosen_weight_logps) + upcast(logps.rejected_weight_logps)  # type: ignore[arg-type]
    return log_weight.detach().clamp(max=0.0).exp()
