"""Options that apply across objectives, as pure maps ``PairLogps -> PairLogps`` (or weights).

- :func:`reference_free`: log-ratios against zero instead of the reference.
- :func:`token_average`: per-token mean log-probs instead of sums.
- :func:`apply_f_divergence`: replace each summed log-ratio ``rho = pi - ref`` by
  ``f'(exp(rho))``, the f-DPO generalisation of DPO's reverse-KL constraint (before any length
  normalisation, as TRL).
- :func:`wpo_weights`: WPO's per-pair weights from the policy's own token probabilities.

LD-DPO's down-weighting of the tokens past the shorter response is not here: it must apply to
the policy and the reference alike, so it happens where the log-probs are summed
(:func:`lightning_dpo.scoring.sequence_logps`).
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

EXP_LINEAR_FROM = 30.0
"""Exponent past which :func:`f_divergence_map` continues ``exp`` along its tangent.

``exp(x)`` is exact up to ``x = 30`` (``e^30 ~ 1e13``) and ``e^30 (1 + x - 30)`` beyond: the
map stays increasing and C1, its slope there is ``e^30`` (never 0), and at summed log-ratios of
-1e4 its values (~1e17), their squares (IPO, rpo_sq; ~1e34) and the gradients stay finite in
float32. A larger threshold would overflow those squares. TRL 1.16 instead clamps the exponent
at 80 (alpha-divergence: the map is then constant, its gradient 0) or not at all (forward KL:
``inf`` below a log-ratio of -88)."""


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


def _expm1_tangent(x: Tensor) -> Tensor:
    """``exp(x) - 1`` up to :data:`EXP_LINEAR_FROM`, continued along its tangent line beyond.

    Args:
        x: Exponents.

    Returns:
        ``expm1(min(x, x0)) + e^x0 * max(x - x0, 0)`` with ``x0 = EXP_LINEAR_FROM``.
    """
    x0 = EXP_LINEAR_FROM
    return torch.expm1(x.clamp(max=x0)) + math.exp(x0) * (x - x0).clamp(min=0.0)


def f_divergence_map(rho: Tensor, divergence: str, alpha: float = 0.5) -> Tensor:
    """``f'(u)`` at ``u = exp(rho)``, shifted so that ``f'(1) = 0``.

    Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
    Diverse Divergence Constraints", https://arxiv.org/abs/2309.16240 (f-DPO), Table 1:

    - ``reverse_kl``: ``f(u) = u log u``, ``f'(u) - 1 = log u = rho`` (plain DPO).
    - ``forward_kl``: ``f(u) = -log u``, ``f'(u) + 1 = 1 - 1/u = 1 - exp(-rho)``.
    - ``js_divergence``: ``f'(u) = log(2u / (1 + u)) = log 2 + logsigmoid(rho)``.
    - ``alpha_divergence``: ``f'(u) = (1 - u^-alpha) / alpha = (1 - exp(-alpha rho)) / alpha``;
      ``alpha -> 0`` is reverse KL, ``alpha = 1`` forward KL. This ``alpha`` is the paper's;
      TRL's ``f_alpha_divergence_coef`` is its complement, ``1 - alpha`` (TRL writes
      ``f'(t) = (t^(c - 1) - 1) / (c - 1)``), so both defaults, 0.5, coincide.

    ``exp`` is exact up to the exponent :data:`EXP_LINEAR_FROM` and linear beyond, so values
    and gradients are finite and the gradient never vanishes (``rho`` below
    ``-EXP_LINEAR_FROM / alpha``: the policy gives the response ``e^-30`` of the reference's
    probability or less; there the map grows linearly instead of exponentially).

    Args:
        rho: Log-ratios ``pi - ref`` (summed over the response: the map is applied before any
            length normalisation, as TRL).
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
    return -_expm1_tangent(-alpha * rho) / alpha


def apply_f_divergence(logps: PairLogps, divergence: str, alpha: float = 0.5) -> PairLogps:
    """The same pairs with each summed log-ratio ``rho`` replaced by ``f'(exp(rho))``.

    The result carries the mapped log-ratios as its policy log-probs and zeros as its reference,
    so any objective reads ``f'(u_c)`` and ``f'(u_l)`` where it read ``rho_c`` and ``rho_r``:
    ``beta f'(u)`` is f-DPO's implicit reward up to ``beta log Z(x)``, which cancels only in the
    chosen-minus-rejected difference, so only objectives of the margin may read them
    (:class:`~lightning_dpo.losses.PreferenceLoss` refuses the others). Token counts are kept:
    a length-normalised objective then divides the mapped value, ``f'(e^rho) / n`` (as TRL).

    Args:
        logps: Log-probabilities of the pairs (summed, not yet length-normalised).
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
    under the current policy, so off-policy pairs (unlikely under the policy) weigh less. No
    gradient flows through the weight.

    Note:
        The product is clamped at 1, as TRL before 1.0 did (TRL 1.16 does not): a token the
        policy finds likelier than ``sum_v p_v^2`` (any mode token) has a log-weight above 0, so
        unclamped weights exceed 1 and scale a pair's loss above DPO's, and with it the step
        size tuned for DPO. :class:`~lightning_dpo.losses.PreferenceLoss` weights the preference
        part only, not the SFT term (TRL 1.16 weights every loss type, ``sft`` included).

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
