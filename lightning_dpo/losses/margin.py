"""Objectives of the pair margin ``d = (pi_c - ref_c) - (pi_r - ref_r)`` alone.

``pi``/``ref`` are the policy's and the reference's summed response log-probs; ``c``/``r`` the
chosen and rejected responses. Each function returns unreduced per-pair losses and the
detached rewards ``beta * (pi - ref)`` of each response (summed, as TRL). Every objective here
is a function of the margin, so it admits the f-divergences of f-DPO (the ``beta log Z(x)`` of
the reparameterised reward cancels in the difference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_dpo.losses.core import (
    LossOutput,
    PairLogps,
    bernoulli_kl,
    logratios,
    mean_logratios,
    output,
    smoothed_sigmoid_loss,
)

EXO_DEFAULT_SMOOTHING = 1e-3
"""EXO's label smoothing when none is configured (``log 0`` is undefined)."""


def dpo_loss(logps: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Direct Preference Optimisation, optionally conservative (label-smoothed).

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", https://arxiv.org/abs/2305.18290; conservative DPO (cDPO): Mitchell 2023,
    "A note on DPO with noisy preferences and relationship to IPO".

    Loss ``-(1 - eps) * logsigmoid(beta * d) - eps * logsigmoid(-beta * d)``; ``eps = 0`` is DPO.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature (strength of the implicit KL constraint), > 0.
        label_smoothing: Probability ``eps`` in ``[0, 0.5)`` that a label is flipped.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    losses = smoothed_sigmoid_loss(beta * (chosen - rejected), label_smoothing)
    return output(losses, chosen, rejected, beta)


def sigmoid_norm_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Length-normalised DPO: DPO over per-token mean log-probs.

    The ``dpo_norm`` of Tulu 3 (Lambert et al. 2024, https://arxiv.org/abs/2411.15124), as
    TRL's ``loss_type="sigmoid_norm"``. Each response's log-ratio is divided by its token count
    (``rho / n``), then ``-logsigmoid(beta * (rho_c / n_c - rho_r / n_r))``. Under an
    f-divergence :class:`~lightning_dpo.losses.PreferenceLoss` maps first and divides after,
    ``f'(e^rho) / n``, as TRL.

    Args:
        logps: Log-probabilities of the pairs, with token counts.
        beta: Inverse temperature, > 0 (on a per-token scale, so typically larger than DPO's).

    Returns:
        Unreduced ``[B]`` losses, detached rewards ``beta * rho`` (summed, as TRL) and the
        length-normalised ``beta * rho / n`` as ``objective_*_rewards``.

    Raises:
        ValueError: If the token counts are missing.
    """
    chosen, rejected = mean_logratios(logps, "objective 'sigmoid_norm'")
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return output(losses, *logratios(logps), beta, scores=(chosen, rejected))


def ipo_loss(logps: PairLogps, beta: float) -> LossOutput:
    """Identity Preference Optimisation, length-normalised as TRL's ``loss_type="ipo"``.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", https://arxiv.org/abs/2310.12036, eq. (17).

    Note:
        The paper regresses the difference of *summed* log-ratios. Like TRL this implementation
        divides each response's log-ratio by its token count, so ``d_norm`` is a difference of
        per-token mean log-ratios and the loss is ``(d_norm - 1 / (2 * beta)) ** 2`` (TRL says
        the IPO authors confirmed the paper's results use this form). Under an f-divergence
        the map comes first, ``f'(e^rho) / n``, as TRL.

    Args:
        logps: Log-probabilities of the pairs, with token counts.
        beta: Regularisation strength, > 0; the regression target is ``1 / (2 * beta)``.

    Returns:
        Unreduced ``[B]`` losses, detached rewards ``beta * rho`` (summed, as TRL) and the
        length-normalised ``beta * rho / n`` as ``objective_*_rewards``.

    Raises:
        ValueError: If the token counts are missing.
    """
    chosen, rejected = mean_logratios(logps, "objective 'ipo'")
    losses = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return output(losses, *logratios(logps), beta, scores=(chosen, rejected))


def hinge_loss(logps: PairLogps, beta: float) -> LossOutput:
    """SLiC's hinge (calibration) loss on the DPO margin: ``relu(1 - beta * d)``.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
    https://arxiv.org/abs/2305.10425, with the reference-relative margin of DPO (as TRL's
    ``loss_type="hinge"``): the margin to reach is ``d = 1 / beta``; past it the loss and its
    gradient are 0.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse of the margin, > 0.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    return output(torch.relu(1 - beta * (chosen - rejected)), chosen, rejected, beta)


def robust_loss(logps: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Provably robust DPO (rDPO): an unbiased loss under preference flips of rate ``eps``.

    Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
    https://arxiv.org/abs/2403.00409, eq. (8). With ``x = beta * d``:
    ``((1 - eps) * -logsigmoid(x) + eps * logsigmoid(-x)) / (1 - 2 eps)``. ``eps = 0`` is DPO.
    Unlike DPO it is unbounded below for ``eps > 0``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        label_smoothing: Flip rate ``eps`` in ``[0, 0.5)``.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    logits = beta * (chosen - rejected)
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    return output(losses, chosen, rejected, beta)


def exo_pair_loss(logps: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """EXact Optimisation (EXO), pairwise: the reverse KL from the model's preference to the label.

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment",
    https://arxiv.org/abs/2402.00856. With ``p = sigmoid(beta * d)`` and the smoothed label
    ``(1 - eps, eps)``: ``KL(Bern(p) || Bern(1 - eps))``
    ``= p (log p - log(1 - eps)) + (1 - p) (log(1 - p) - log eps)``. The label cannot be hard
    (``log 0``): ``eps = 0`` means ``eps = 1e-3``, the value the paper recommends (TRL 1.16
    refuses ``label_smoothing=0`` for ``exo_pair`` instead).

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        label_smoothing: ``eps`` in ``[0, 0.5)``; 0 selects 1e-3.

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    logits = beta * (chosen - rejected)
    eps = label_smoothing or EXO_DEFAULT_SMOOTHING
    log_label = torch.full_like(logits, math.log1p(-eps))
    log_flip = torch.full_like(logits, math.log(eps))
    losses = bernoulli_kl(F.logsigmoid(logits), F.logsigmoid(-logits), log_label, log_flip)
    return output(losses, chosen, rejected, beta)


def discopop_loss(logps: PairLogps, beta: float, tau: float = 0.05) -> LossOutput:
    """DiscoPOP: the log-ratio modulated loss, a sigmoid-gated blend of logistic and exponential.

    Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large
    Language Models", https://arxiv.org/abs/2406.08414. With ``x = beta * d`` and the gate
    ``m = sigmoid(x / tau)``: ``(1 - m) * -logsigmoid(x) + m * exp(-x)``. The exponential part
    is computed as ``exp(-x + logsigmoid(x / tau))``, finite for every ``x`` when ``tau <= 1``.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature, > 0.
        tau: Temperature of the gate, in ``(0, 1]`` (the paper uses 0.05).

    Returns:
        Unreduced ``[B]`` losses and detached rewards.
    """
    chosen, rejected = logratios(logps)
    logits = beta * (chosen - rejected)
    logistic = torch.sigmoid(-logits / tau) * -F.logsigmoid(logits)
    exponential = torch.exp(-logits + F.logsigmoid(logits / tau))
    return output(logistic + exponential, chosen, rejected, beta)
