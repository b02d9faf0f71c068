"""The data types every objective shares, and the numeric helpers they are built from.

Numerics: inputs are upcast to at least float32 before any arithmetic (bfloat16/float16 become
float32, float64 stays float64), and sigmoids enter only through ``logsigmoid``/``sigmoid``
(never an ``exp`` of an unbounded argument), so losses and gradients stay finite for
``|beta * d|`` up to 1e4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class LossOutput(NamedTuple):
    """Result of a preference objective.

    ``chosen_rewards``/``rejected_rewards`` follow TRL's definition for every objective and
    option: ``beta * (log pi - log ref)`` of each response, summed over its tokens (LD-DPO: the
    LD-weighted sums, as TRL; ``reference_free``: against 0), neither length-normalised nor
    f-mapped, so ``rewards/*`` curves compare across objectives and with TRL runs. What an
    objective itself compares, where that differs (length-normalised for ipo, sigmoid_norm and
    ``average_logps``; ``beta f'(u)`` under an f-divergence), is in ``objective_*_rewards``.

    Attributes:
        losses: ``[B]`` per-example total loss, unreduced (the caller averages).
        chosen_rewards: ``[B]`` ``beta * (pi_c - ref_c)`` of the chosen response, detached.
        rejected_rewards: ``[B]`` ``beta * (pi_r - ref_r)`` of the rejected response, detached.
        sft_losses: ``[B]`` NLL term before weighting when the loss has one
            (:class:`~lightning_dpo.losses.PreferenceLoss` only), else ``None``.
        preference_losses: ``[B]`` preference part alone, every objective weighted
            (:class:`~lightning_dpo.losses.PreferenceLoss` only), else ``None``.
        terms: ``{name: [B]}`` each objective of a mix before its weight
            (:class:`~lightning_dpo.losses.PreferenceLoss` with two or more objectives only).
        objective_chosen_rewards: ``[B]`` the objective's own implicit reward of the chosen
            response, ``beta`` times the score it compares, detached; ``None`` where that is
            ``chosen_rewards`` (no length normalisation, no f-divergence).
        objective_rejected_rewards: ``[B]`` same for the rejected response.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    sft_losses: Tensor | None = None
    preference_losses: Tensor | None = None
    terms: dict[str, Tensor] | None = None
    objective_chosen_rewards: Tensor | None = None
    objective_rejected_rewards: Tensor | None = None


@dataclass(frozen=True, eq=False)
class PairLogps:
    """Summed response log-probabilities of a batch of preference pairs.

    Attributes:
        policy_chosen: ``[B]`` log-prob of the chosen response under the policy, summed over the
            response tokens.
        policy_rejected: ``[B]`` same for the rejected response.
        reference_chosen: ``[B]`` log-prob of the chosen response under the frozen reference.
        reference_rejected: ``[B]`` same for the rejected response.
        chosen_tokens: ``[B]`` number of response tokens of the chosen response (long or
            float); needed by the length-normalised objectives and options.
        rejected_tokens: ``[B]`` same for the rejected response.
        sft_chosen: ``[B]`` plain summed log-prob of the chosen response for the SFT term,
            where ``policy_chosen`` is re-weighted (LD-DPO); ``None`` means ``policy_chosen``.
        chosen_weight_logps: ``[B]`` WPO log-weight of the chosen response under the policy
            (mean over its tokens of ``log p_t - log sum_v p_v^2``), detached; ``None`` unless
            WPO weighting is on.
        rejected_weight_logps: ``[B]`` same for the rejected response.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Tensor
    reference_rejected: Tensor
    chosen_tokens: Tensor | None = None
    rejected_tokens: Tensor | None = None
    sft_chosen: Tensor | None = None
    chosen_weight_logps: Tensor | None = None
    rejected_weight_logps: Tensor | None = None


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` as a floating tensor of at least float32 precision.

    Args:
        x: Any numeric tensor.

    Returns:
        ``x`` in float32 (or float64 if it already was float64).
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_counts(logps: PairLogps, needed_by: str) -> tuple[Tensor, Tensor]:
    """The chosen and rejected token counts, or a clear error naming what needs them.

    Args:
        logps: Log-probabilities of the pairs.
        needed_by: What needs the counts, for the message (e.g. ``"objective 'ipo'"``).

    Returns:
        ``(chosen_tokens, rejected_tokens)``.

    Raises:
        ValueError: If either count is missing.
    """
    missing = [
        name for name in ("chosen_tokens", "rejected_tokens") if getattr(logps, name) is None
    ]
    if missing:
        raise ValueError(
            f"{needed_by} needs the response lengths: set PairLogps.chosen_tokens and "
            f"PairLogps.rejected_tokens (missing: {', '.join(missing)})"
        )
    return logps.chosen_tokens, logps.rejected_tokens  # type: ignore[return-value]


def per_token(logp: Tensor, tokens: Tensor) -> Tensor:
    """Divide a summed log-prob by its token count.

    Counts are clamped to at least 1 so that an empty response (whose summed log-prob is 0)
    yields 0 instead of ``0 / 0``.

    Args:
        logp: ``[B]`` summed log-probabilities.
        tokens: ``[B]`` token counts.

    Returns:
        ``[B]`` mean per-token log-probabilities (at least float32).
    """
    logp = upcast(logp)
    return logp / tokens.to(logp.dtype).clamp(min=1.0)


def logratios(logps: PairLogps) -> tuple[Tensor, Tensor]:
    """Summed policy-minus-reference log-ratios of the chosen and rejected responses.

    Args:
        logps: Log-probabilities of the pairs.

    Returns:
        ``(chosen, rejected)``, each ``[B]`` and at least float32.
    """
    chosen = upcast(logps.policy_chosen) - upcast(logps.reference_chosen)
    rejected = upcast(logps.policy_rejected) - upcast(logps.reference_rejected)
    return chosen, rejected


def mean_logratios(logps: PairLogps, needed_by: str) -> tuple[Tensor, Tensor]:
    """Length-normalised log-ratios ``rho / n``: each summed log-ratio over its token count.

    Args:
        logps: Log-probabilities of the pairs.
        needed_by: What needs them, named in the error if the token counts are missing.

    Returns:
        ``(chosen, rejected)``, each ``[B]`` and at least float32.
    """
    n_chosen, n_rejected = token_counts(logps, needed_by)
    chosen, rejected = logratios(logps)
    return per_token(chosen, n_chosen), per_token(rejected, n_rejected)


def output(
    losses: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    beta: float,
    scores: tuple[Tensor, Tensor] | None = None,
) -> LossOutput:
    """Package losses with the detached rewards ``beta * log-ratio``.

    Args:
        losses: ``[B]`` per-example losses.
        chosen: ``[B]`` summed chosen log-ratios.
        rejected: ``[B]`` summed rejected log-ratios.
        beta: Inverse temperature of the implicit reward.
        scores: ``(chosen, rejected)`` scores the objective compares instead of the summed
            log-ratios (e.g. length-normalised); ``beta`` times them become the
            ``objective_*_rewards``. ``None``: the objective compares the summed log-ratios.

    Returns:
        The assembled :class:`LossOutput`.
    """
    own = (None, None) if scores is None else tuple((beta * s).detach() for s in scores)
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen).detach(),
        rejected_rewards=(beta * rejected).detach(),
        objective_chosen_rewards=own[0],
        objective_rejected_rewards=own[1],
    )


def smoothed_sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against the label ``1 - label_smoothing``.

    ``-(1 - eps) * logsigmoid(x) - eps * logsigmoid(-x)``: the DPO loss with conservative
    label smoothing (the preference is flipped with probability ``eps``).

    Args:
        logits: ``[B]`` preference logits ``beta * d``.
        label_smoothing: ``eps`` in ``[0, 0.5)``.

    Returns:
        ``[B]`` losses.
    """
    losses = -torch.nn.functional.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * torch.nn.functional.logsigmoid(
            -logits
        )
    return losses


def bernoulli_kl(log_a: Tensor, log_1ma: Tensor, log_b: Tensor, log_1mb: Tensor) -> Tensor:
    """``KL(Bern(a) || Bern(b))`` from log-probabilities, without forming ``1 - a`` by subtraction.

    Args:
        log_a: ``log a``.
        log_1ma: ``log(1 - a)``.
        log_b: ``log b``.
        log_1mb: ``log(1 - b)``.

    Returns:
        ``a * (log a - log b) + (1 - a) * (log(1 - a) - log(1 - b))``.
    """
    return log_a.exp() * (log_a - log_b) + log_1ma.exp() * (log_1ma - log_1mb)
