"""The supervised (negative log-likelihood) term on the chosen response."""

from __future__ import annotations

from torch import Tensor

from lightning_dpo.losses.core import LossOutput, PairLogps, logratios, output, per_token, upcast


def sft_loss(logps: PairLogps, average: bool = True) -> Tensor:
    """Negative log-likelihood of the chosen response, per token (default) or summed.

    Uses ``logps.sft_chosen`` when set (the plain log-likelihood where ``policy_chosen`` is
    re-weighted by LD-DPO), else ``logps.policy_chosen``.

    Args:
        logps: Log-probabilities of the pairs.
        average: Divide by the chosen token count (clamped to at least 1); else the summed NLL.

    Returns:
        ``[B]`` NLL of each chosen response.

    Raises:
        ValueError: If ``average`` and the token counts are missing.
    """
    chosen = logps.sft_chosen if logps.sft_chosen is not None else logps.policy_chosen
    if not average:
        return -upcast(chosen)
    if logps.chosen_tokens is None:
        raise ValueError(
            "the per-token SFT term needs the response lengths: set PairLogps.chosen_tokens "
            "(missing: chosen_tokens), or sum the NLL with sft_average=False"
        )
    return -per_token(chosen, logps.chosen_tokens)


def sft_objective(logps: PairLogps, beta: float, average: bool = True) -> LossOutput:
    """The SFT term as a stand-alone objective (``loss=sft``), with DPO's rewards for the metrics.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature of the reported implicit rewards ``beta * (pi - ref)``.
        average: Per-token mean NLL (default) or summed NLL.

    Returns:
        ``[B]`` NLL of each chosen response and detached rewards.
    """
    chosen, rejected = logratios(logps)
    return output(sft_loss(logps, average), chosen, rejected, beta)
