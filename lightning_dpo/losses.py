"""Preference-optimisation objectives: DPO, IPO and the RPO family.

Every objective takes a :class:`PairLogps` (summed response log-probabilities of the chosen and
rejected completions under the policy and the frozen reference) and returns a :class:`LossOutput`
holding the *unreduced* per-example losses plus the detached implicit rewards. Reduction (the
mean over the batch) is left to the caller.

Numerics: inputs are upcast to at least float32 before any arithmetic (bfloat16/float16 become
float32, float64 stays float64), sigmoids enter only through ``logsigmoid``/``sigmoid`` (never an
``exp`` of an unbounded argument), so losses and gradients stay finite for ``|beta * d|`` in the
thousands.

:class:`PreferenceLoss` is the configurable entry point that Hydra instantiates
(``_target_: lightning_dpo.losses.PreferenceLoss``); it validates its configuration eagerly and
optionally adds a supervised (NLL) term on the chosen response.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "OBJECTIVES",
    "REWARD_OBJECTIVES",
    "LossOutput",
    "PairLogps",
    "PreferenceLoss",
    "dpo_loss",
    "ipo_loss",
    "rpo_bwd_kl_loss",
    "rpo_fwd_kl_loss",
    "rpo_sq_loss",
    "sft_loss",
]


class LossOutput(NamedTuple):
    """Result of a preference objective.

    Attributes:
        losses: ``[B]`` per-example total loss, unreduced (the caller averages).
        chosen_rewards: ``[B]`` implicit reward of the chosen response, detached.
        rejected_rewards: ``[B]`` implicit reward of the rejected response, detached.
        sft_losses: ``[B]`` NLL term before weighting when ``sft_weight > 0``
            (:class:`PreferenceLoss` only), else ``None``.
        preference_losses: ``[B]`` preference term alone (:class:`PreferenceLoss` only), else
            ``None``.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    sft_losses: Tensor | None = None
    preference_losses: Tensor | None = None


@dataclass(frozen=True, eq=False)
class PairLogps:
    """Summed response log-probabilities of a batch of preference pairs.

    Attributes:
        policy_chosen: ``[B]`` log-prob of the chosen response under the policy, summed over the
            response tokens.
        policy_rejected: ``[B]`` same for the rejected response.
        reference_chosen: ``[B]`` log-prob of the chosen response under the frozen reference.
        reference_rejected: ``[B]`` same for the rejected response.
        chosen_tokens: ``[B]`` number of response tokens of the chosen response (long or float).
        rejected_tokens: ``[B]`` number of response tokens of the rejected response.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Tensor
    reference_rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor


# --------------------------------------------------------------------------------------------
# Numeric helpers
# --------------------------------------------------------------------------------------------


def _upcast(x: Tensor) -> Tensor:
    """Return ``x`` as a floating tensor of at least float32 precision.

    Args:
        x: Any numeric tensor.

    Returns:
        ``x`` in float32 (or float64 if it already was float64).
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _per_token(logp: Tensor, tokens: Tensor) -> Tensor:
    """Divide a summed log-prob by its token count.

    Counts are clamped to at least 1 so that an empty response (whose summed log-prob is 0)
    yields 0 instead of ``0 / 0``.

    Args:
        logp: ``[B]`` summed log-probabilities.
        tokens: ``[B]`` token counts.

    Returns:
        ``[B]`` mean per-token log-probabilities (at least float32).
    """
    logp = _upcast(logp)
    return logp / tokens.to(logp.dtype).clamp(min=1.0)


def _logratios(logps: PairLogps) -> tuple[Tensor, Tensor]:
    """Summed policy-minus-reference log-ratios of the chosen and rejected responses.

    Args:
        logps: Log-probabilities of the pairs.

    Returns:
        ``(chosen, rejected)``, each ``[B]`` and at least float32.
    """
    chosen = _upcast(logps.policy_chosen) - _upcast(logps.reference_chosen)
    rejected = _upcast(logps.policy_rejected) - _upcast(logps.reference_rejected)
    return chosen, rejected


def _mean_logratios(logps: PairLogps) -> tuple[Tensor, Tensor]:
    """Length-normalised (per-token mean) policy-minus-reference log-ratios.

    Args:
        logps: Log-probabilities of the pairs.

    Returns:
        ``(chosen, rejected)``, each ``[B]`` and at least float32.
    """
    chosen = _per_token(logps.policy_chosen, logps.chosen_tokens) - _per_token(
        logps.reference_chosen, logps.chosen_tokens
    )
    rejected = _per_token(logps.policy_rejected, logps.rejected_tokens) - _per_token(
        logps.reference_rejected, logps.rejected_tokens
    )
    return chosen, rejected


def _output(losses: Tensor, chosen: Tensor, rejected: Tensor, beta: float) -> LossOutput:
    """Package losses with the detached implicit rewards ``beta * log-ratio``.

    Args:
        losses: ``[B]`` per-example losses.
        chosen: ``[B]`` chosen log-ratios.
        rejected: ``[B]`` rejected log-ratios.
        beta: Inverse temperature of the implicit reward.

    Returns:
        The assembled :class:`LossOutput`.
    """
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen).detach(),
        rejected_rewards=(beta * rejected).detach(),
    )


def _check_rewards(logps: PairLogps, chosen_reward: Tensor, rejected_reward: Tensor) -> None:
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


def _reward_gap(
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
    _check_rewards(logps, chosen_reward, rejected_reward)
    return gt_reward_scale * (_upcast(chosen_reward) - _upcast(rejected_reward))


def _bernoulli_kl(log_a: Tensor, log_1ma: Tensor, log_b: Tensor, log_1mb: Tensor) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def sft_loss(logps: PairLogps) -> Tensor:
    """Per-token mean negative log-likelihood of the chosen response.

    Args:
        logps: Log-probabilities of the pairs.

    Returns:
        ``[B]`` ``-policy_chosen / chosen_tokens`` (token counts clamped to at least 1).
    """
    return -_per_token(logps.policy_chosen, logps.chosen_tokens)


def dpo_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Direct Preference Optimisation loss.

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", https://arxiv.org/abs/2305.18290.

    With ``d = (pi_c - ref_c) - (pi_r - ref_r)`` on summed log-probs, the loss is
    ``-logsigmoid(beta * d)``; the implicit rewards are ``beta * (pi - ref)`` per response.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature (strength of the implicit KL constraint), > 0.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = _logratios(logps)
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return _output(losses, chosen, rejected, beta)


def ipo_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Identity Preference Optimisation loss, length-normalised as in Hugging Face TRL.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", https://arxiv.org/abs/2310.12036.

    Note:
        The paper regresses the difference of *summed* log-ratios. Like TRL's ``loss_type="ipo"``
        this implementation first divides every log-prob (policy and reference) by its response's
        token count, so ``d_norm`` is a difference of per-token mean log-ratios and the loss is
        ``(d_norm - 1 / (2 * beta)) ** 2``. Doubling a response with the same per-token
        log-probs therefore leaves the loss unchanged. The rewards are likewise length-normalised:
        ``beta * (mean policy logp - mean reference logp)``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Regularisation strength, > 0; the regression target is ``1 / (2 * beta)``.

    Returns:
        Unreduced ``[B]`` losses and detached (length-normalised) rewards.
    """
    chosen, rejected = _mean_logratios(logps)
    losses = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return _output(losses, chosen, rejected, beta)


def rpo_sq_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float,
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
    gap = _reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = _logratios(logps)
    losses = (beta * (chosen - rejected) - gap) ** 2
    return _output(losses, chosen, rejected, beta)


def rpo_fwd_kl_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float,
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
    gap = _reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = _logratios(logps)
    logits = beta * (chosen - rejected)
    losses = _bernoulli_kl(
        F.logsigmoid(logits), F.logsigmoid(-logits), F.logsigmoid(gap), F.logsigmoid(-gap)
    )
    return _output(losses, chosen, rejected, beta)


def rpo_bwd_kl_loss(
    logps: PairLogps,
    chosen_reward: Tensor,
    rejected_reward: Tensor,
    beta: float,
    gt_reward_scale: float,
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
    gap = _reward_gap(logps, chosen_reward, rejected_reward, gt_reward_scale)
    chosen, rejected = _logratios(logps)
    logits = beta * (chosen - rejected)
    losses = _bernoulli_kl(
        F.logsigmoid(gap), F.logsigmoid(-gap), F.logsigmoid(logits), F.logsigmoid(-logits)
    )
    return _output(losses, chosen, rejected, beta)


OBJECTIVES: dict[str, Callable[..., LossOutput]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "rpo_sq": rpo_sq_loss,
    "rpo_fwd_kl": rpo_fwd_kl_loss,
    "rpo_bwd_kl": rpo_bwd_kl_loss,
}
"""Preference objectives by configuration name."""

REWARD_OBJECTIVES: frozenset[str] = frozenset({"rpo_sq", "rpo_fwd_kl", "rpo_bwd_kl"})
"""Objectives that need per-pair ground-truth rewards."""


# --------------------------------------------------------------------------------------------
# Configurable entry point
# --------------------------------------------------------------------------------------------


def _finite(name: str, value: object, requirement: str) -> float:
    """Convert a configuration value to a finite float.

    Args:
        name: Field name used in the error message (without the ``loss.`` prefix).
        value: The configured value.
        requirement: Human-readable requirement, e.g. ``"a finite number > 0"``.

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: If ``value`` is not a real number or is not finite.
    """
    message = f"loss.{name} must be {requirement}, got {value!r}"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not math.isfinite(number):
        raise ValueError(message)
    return number


def _check_objective(objective: str) -> str:
    """Return ``objective`` if it names a registered objective.

    Args:
        objective: Configured objective name.

    Returns:
        The objective name.

    Raises:
        ValueError: If the name is not in :data:`OBJECTIVES`; the message lists the valid names.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"loss.objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    return objective


class PreferenceLoss:
    """Configurable preference loss, optionally mixed with an SFT term on the chosen response.

    This is what Hydra instantiates (``conf/loss/*.yaml``:
    ``_target_: lightning_dpo.losses.PreferenceLoss``). The configuration is validated at
    construction. The total per-example loss is
    ``preference + sft_weight * sft_loss(logps)``.

    Attributes:
        objective: Name of the objective in :data:`OBJECTIVES`.
        beta: Inverse temperature / regularisation strength, finite and > 0.
        sft_weight: Weight of the chosen-response NLL term, finite and >= 0.
        gt_reward_scale: Multiplier of the ground-truth reward gap (RPO objectives only).
    """

    def __init__(
        self,
        objective: str = "dpo",
        beta: float = 0.1,
        sft_weight: float = 0.0,
        gt_reward_scale: float = 1.0,
    ) -> None:
        self.objective = _check_objective(objective)
        beta = _finite("beta", beta, "a finite number > 0")
        if beta <= 0:
            raise ValueError(f"loss.beta must be a finite number > 0, got {beta!r}")
        sft_weight = _finite("sft_weight", sft_weight, "a finite number >= 0")
        if sft_weight < 0:
            raise ValueError(f"loss.sft_weight must be a finite number >= 0, got {sft_weight!r}")
        self.beta = beta
        self.sft_weight = sft_weight
        self.gt_reward_scale = _finite("gt_reward_scale", gt_reward_scale, "a finite number")

    @property
    def requires_rewards(self) -> bool:
        """Whether the objective needs ``chosen_reward``/``rejected_reward``."""
        return self.objective in REWARD_OBJECTIVES

    def _preference(
        self, logps: PairLogps, chosen_reward: Tensor | None, rejected_reward: Tensor | None
    ) -> LossOutput:
        """Evaluate the configured objective alone.

        Args:
            logps: Log-probabilities of the pairs.
            chosen_reward: ``[B]`` ground-truth rewards of the chosen responses, or ``None``.
            rejected_reward: ``[B]`` ground-truth rewards of the rejected responses, or ``None``.

        Returns:
            The objective's output.

        Raises:
            ValueError: If a reward objective is missing its rewards.
        """
        fn = OBJECTIVES[self.objective]
        if not self.requires_rewards:
            return fn(logps, self.beta)
        missing = [
            name
            for name, value in (
                ("chosen_reward", chosen_reward),
                ("rejected_reward", rejected_reward),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"loss objective {self.objective!r} needs per-pair rewards: "
                f"pass `chosen_reward` and `rejected_reward` (missing: {', '.join(missing)})"
            )
        return fn(logps, chosen_reward, rejected_reward, self.beta, self.gt_reward_scale)

    def __call__(
        self,
        logps: PairLogps,
        chosen_reward: Tensor | None = None,
        rejected_reward: Tensor | None = None,
    ) -> LossOutput:
        """Compute the per-example loss.

        Args:
            logps: Log-probabilities of the pairs.
            chosen_reward: ``[B]`` ground-truth rewards of the chosen responses; required by the
                RPO objectives, ignored by the others.
            rejected_reward: ``[B]`` ground-truth rewards of the rejected responses; likewise.

        Returns:
            Unreduced ``[B]`` total losses, detached rewards, the preference term alone in
            ``preference_losses`` and, when ``sft_weight > 0``, the unweighted NLL in
            ``sft_losses``.

        Raises:
            ValueError: If a reward objective is called without rewards, or the rewards' shape
                differs from the log-probs'.
        """
        preference = self._preference(logps, chosen_reward, rejected_reward)
        if self.sft_weight > 0:
            sft = sft_loss(logps)
            return preference._replace(
                losses=preference.losses + self.sft_weight * sft,
                sft_losses=sft,
                preference_losses=preference.losses,
            )
        return preference._replace(preference_losses=preference.losses)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(objective={self.objective!r}, beta={self.beta!r}, "
            f"sft_weight={self.sft_weight!r}, gt_reward_scale={self.gt_reward_scale!r})"
        )
