"""The supervised (negative log-likelihood) term on the chosen response.

Three reductions (``sft_average``), each returned per example, unreduced:

- ``"token"`` (``True``, the default): each pair's NLL divided by its own token count, so the
  module's mean over the batch is a mean of per-pair token means.
- ``"sum"`` (``False``): each pair's summed NLL.
- ``"batch_token"``: TRL's ``loss_type="sft"``, the token mean over the whole batch. That is not
  a per-example value, so pair ``i`` gets ``nll_i * B / N`` with ``N`` the batch's chosen token
  count: the batch mean ``sum_i nll_i / N`` is TRL's, and each pair's share of the gradient is
  its share of the tokens.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from lightning_dpo.losses.core import LossOutput, PairLogps, logratios, output, per_token, upcast

SftAverage = Literal["token", "sum", "batch_token"]
SFT_AVERAGES: tuple[str, ...] = ("token", "sum", "batch_token")
"""Valid ``sft_average`` modes (``True`` means ``"token"``, ``False`` means ``"sum"``)."""


def sft_mode(average: bool | str) -> str:
    """The ``sft_average`` mode name of a configured value.

    Args:
        average: A mode name, or a bool (``True`` is ``"token"``, ``False`` is ``"sum"``).

    Returns:
        One of :data:`SFT_AVERAGES`.

    Raises:
        ValueError: If ``average`` is neither a bool nor a mode name.
    """
    if isinstance(average, bool):
        return "token" if average else "sum"
    if average not in SFT_AVERAGES:
        raise ValueError(
            f"loss.sft_average must be one of {list(SFT_AVERAGES)} (or true = 'token', "
            f"false = 'sum'), got {average!r}"
        )
    return average


def sft_loss(logps: PairLogps, average: bool | str = True) -> Tensor:
    """Negative log-likelihood of the chosen response, per example.

    Uses ``logps.sft_chosen`` when set (the plain log-likelihood where ``policy_chosen`` is
    re-weighted by LD-DPO, as TRL's ``sft`` reads the plain token log-probs), else
    ``logps.policy_chosen``.

    Args:
        logps: Log-probabilities of the pairs.
        average: ``"token"``/``True``: over the pair's own token count (clamped to at least
            1); ``"sum"``/``False``: summed; ``"batch_token"``: ``nll_i * B / N`` whose batch
            mean is the batch's token mean (TRL), see the module docstring.

    Returns:
        ``[B]`` NLL of each chosen response.

    Raises:
        ValueError: If the mode is unknown, or it needs the token counts and they are missing.
    """
    mode = sft_mode(average)
    chosen = logps.sft_chosen if logps.sft_chosen is not None else logps.policy_chosen
    if mode == "sum":
        return -upcast(chosen)
    if logps.chosen_tokens is None:
        raise ValueError(
            f"the per-token SFT term (sft_average={mode!r}) needs the response lengths: set "
            "PairLogps.chosen_tokens (missing: chosen_tokens), or sum the NLL with "
            "sft_average='sum'"
        )
    if mode == "token":
        return -per_token(chosen, logps.chosen_tokens)
    nll = -upcast(chosen)
    total = logps.chosen_tokens.to(nll.dtype).sum().clamp(min=1.0)
    return nll * (nll.shape[0] / total)


def sft_objective(logps: PairLogps, beta: float, average: bool | str = True) -> LossOutput:
    """The SFT term as a stand-alone objective (``loss=sft``), with DPO's rewards for the metrics.

    Args:
        logps: Log-probabilities of the pairs.
        beta: Inverse temperature of the reported rewards ``beta * (pi - ref)``.
        average: An ``sft_average`` mode, see :func:`sft_loss`.

    Returns:
        ``[B]`` NLL of each chosen response and detached rewards.
    """
    chosen, rejected = logratios(logps)
    return output(sft_loss(logps, average), chosen, rejected, beta)
