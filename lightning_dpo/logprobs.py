"""Masked per-sequence log-probs from a causal language model.

Chosen and rejected responses arrive as one batch of ``2B`` rows (see
:func:`lightning_dpo.data.collate_pairs`): rows ``0..B-1`` the chosen responses, rows
``B..2B-1`` the rejected ones of the same pairs. The policy and the reference each run one
forward per batch instead of two.

Per-token weightings that must apply to the policy and the reference alike happen here, where
the tokens are summed: LD-DPO's ``ld_alpha``. WPO's weights, which come from the policy alone,
are computed here too because they need the full distribution at each token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_dpo.losses import PairLogps

DEFAULT_LOGPS_CHUNK_SIZE = 64
"""Positions scored at a time by default (``PreferenceModule(logps_chunk_size=...)``)."""


class SequenceLogps(NamedTuple):
    """Per-sequence log-probs of the response tokens of a batch of ``N`` rows.

    Attributes:
        sums: ``[N]`` sum of the log-probs of the tokens selected by the loss mask, each token
            weighted by LD-DPO when ``ld_alpha`` is set.
        token_counts: ``[N]`` how many tokens the loss mask selected in each row.
        plain_sums: ``[N]`` the unweighted sums when ``ld_alpha`` is set, else ``None``.
        wpo_log_weights: ``[N]`` WPO log-weight of each row (mean over its response tokens of
            ``log p_t - log sum_v p_v^2``), detached, when asked for; else ``None``.
    """

    sums: Tensor
    token_counts: Tensor
    plain_sums: Tensor | None = None
    wpo_log_weights: Tensor | None = None


class _ChunkedLabelLogps(torch.autograd.Function):
    """``logit[label] - logsumexp(logits)`` over position chunks, with a chunked backward.

    Forward keeps only the logits (which exist anyway) and the ``[N, T]`` log-normalisers;
    backward writes each chunk's gradient ``g * (onehot - softmax)`` straight into one
    gradient buffer. Peak extra memory is one chunk of float32 temporaries plus the
    gradient itself, instead of the full float32 log-softmax, its saved copy and a
    scattered one-hot gradient.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, chunk_size: int) -> Tensor:
        rows, length = labels.shape
        out = logits.new_empty((rows, length), dtype=torch.float32)
        normalisers = torch.empty_like(out)
        for start in range(0, length, chunk_size):
            end = start + chunk_size
            chunk = logits[:, start:end].float()
            normalisers[:, start:end] = torch.logsumexp(chunk, dim=-1)
            picked = chunk.gather(-1, labels[:, start:end].unsqueeze(-1)).squeeze(-1)
            out[:, start:end] = picked - normalisers[:, start:end]
        ctx.save_for_backward(logits, labels, normalisers)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        logits, labels, normalisers = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, labels.shape[1], ctx.chunk_size):
            end = start + ctx.chunk_size
            upstream = grad_out[:, start:end].unsqueeze(-1)
            probs = torch.exp(logits[:, start:end].float() - normalisers[:, start:end, None])
            chunk_grad = probs.mul_(-upstream)
            chunk_grad.scatter_add_(-1, labels[:, start:end].unsqueeze(-1), upstream)
            grad[:, start:end] = chunk_grad
        return grad, None, None


def token_logps(logits: Tensor, labels: Tensor, chunk_size: int | None = None) -> Tensor:
    """Log-probability of each label under its logits, computed in float32.

    With ``chunk_size`` the positions are scored ``chunk_size`` at a time as
    ``logit[label] - logsumexp(logits)`` (forward and backward), so the ``[N, T, V]``
    float32 log-softmax is never materialised nor kept for backward. Equal to the plain
    computation within float32 rounding (the two orders of subtraction round
    differently); ``bench/bench_logprobs.py`` measures the memory.

    Args:
        logits: ``[N, T, V]`` unnormalised scores.
        labels: ``[N, T]`` token ids to score.
        chunk_size: Positions per chunk; ``None`` computes a full ``log_softmax``.

    Returns:
        ``[N, T]`` float32 log-probs.
    """
    if chunk_size is None:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    return _ChunkedLabelLogps.apply(logits, labels, chunk_size)


def ld_token_weights(mask: Tensor, ld_alpha: float) -> Tensor:
    """LD-DPO's per-token weights: 1 up to the shorter response's length, ``ld_alpha`` after.

    Liu et al. 2024, "Length Desensitization in Preference Optimization",
    https://arxiv.org/abs/2409.06411: the likelihood of a response splits into its first
    ``l_p = min(l_chosen, l_rejected)`` tokens (the length both responses share) and the
    excess; the excess log-likelihood is scaled by ``ld_alpha``, in the policy and the
    reference alike.

    Args:
        mask: ``[2B, T]`` bool, True on the scored response tokens; rows ``i`` and ``i + B``
            are the chosen and rejected responses of pair ``i``.
        ld_alpha: Weight of the excess tokens, in ``[0, 1]``.

    Returns:
        ``[2B, T]`` float32 weights, 0 outside the mask.

    Raises:
        ValueError: If the batch does not have an even number of rows.
    """
    rows = mask.shape[0]
    if rows % 2:
        raise ValueError(f"LD-DPO needs [chosen; rejected] rows in pairs, got {rows} rows")
    counts = mask.sum(-1)
    public = torch.minimum(counts[: rows // 2], counts[rows // 2 :]).repeat(2)
    position = mask.long().cumsum(-1) - 1  # index of each token within its response
    weights = torch.where(position < public.unsqueeze(-1), 1.0, ld_alpha)
    return weights.float() * mask


def wpo_log_weights(logits: Tensor, per_token: Tensor, mask: Tensor) -> Tensor:
    """WPO's log-weight of each row, under ``no_grad``.

    Zhou et al. 2024, "WPO: Enhancing RLHF with Weighted Preference Optimization",
    https://arxiv.org/abs/2406.11827, eq. (2): the mean over the response tokens of
    ``log p(y_t) - log sum_v p(v)^2``, the log-probability of the token relative to the
    policy's expected probability of its own samples at that position.

    Args:
        logits: ``[N, T, V]`` logits that scored the tokens.
        per_token: ``[N, T]`` log-probs of the scored tokens, 0 outside ``mask``.
        mask: ``[N, T]`` bool, True on the scored tokens.

    Returns:
        ``[N]`` detached float32 log-weights (0 for a row without tokens).
    """
    with torch.no_grad():
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        adjustment = torch.logsumexp(2 * log_probs, dim=-1)
        adjusted = torch.where(mask, per_token.detach() - adjustment, 0.0)
        return adjusted.sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    *,
    ld_alpha: float | None = None,
    wpo_weights: bool = False,
    chunk_size: int | None = None,
) -> SequenceLogps:
    """Sum the log-probs of the masked tokens of each row in one forward.

    Token ``t`` is scored by the logits at position ``t - 1``; prompt and padding
    positions (``loss_mask`` False) contribute exactly zero.

    Args:
        model: A causal LM returning an object with ``.logits`` of shape ``[N, T, V]``.
        input_ids: ``[N, T]`` prompt + response token ids, right-padded.
        attention_mask: ``[N, T]`` 1 on real tokens, 0 on padding.
        loss_mask: ``[N, T]`` True on response tokens (including EOS).
        ld_alpha: LD-DPO weight of the tokens past the shorter response of each pair
            (rows in ``[chosen; rejected]`` layout); ``None`` sums them plainly.
        wpo_weights: Also compute WPO's per-row log-weights.
        chunk_size: Score ``chunk_size`` positions at a time without a full float32
            log-softmax (see :func:`token_logps`); ``None`` for the plain computation.

    Returns:
        The per-row sums and token counts (and the plain sums / WPO log-weights when asked).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    per_token = token_logps(logits[:, :-1], input_ids[:, 1:], chunk_size)
    mask = loss_mask[:, 1:].bool()
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    sums, plain = per_token.sum(-1), None
    if ld_alpha is not None:
        plain, sums = sums, (per_token * ld_token_weights(mask, ld_alpha)).sum(-1)
    weights = wpo_log_weights(logits[:, :-1], per_token, mask) if wpo_weights else None
    return SequenceLogps(sums, mask.sum(-1), plain, weights)


def pair_logps(policy: SequenceLogps, reference: Tensor) -> PairLogps:
    """Split ``[chosen; rejected]`` rows of the policy and the reference into pairs.

    Args:
        policy: The policy's log-probs of the ``2B`` rows.
        reference: ``[2B]`` the reference's summed log-probs of the same rows.

    Returns:
        The ``B`` pairs, with token counts, LD-DPO's plain chosen sums for the SFT term and
        WPO's log-weights where the policy carries them.
    """
    half = policy.sums.shape[0] // 2

    def split(rows: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        return (None, None) if rows is None else (rows[:half], rows[half:])

    plain_chosen, _ = split(policy.plain_sums)
    weight_chosen, weight_rejected = split(policy.wpo_log_weights)
    return PairLogps(
        policy_chosen=policy.sums[:half],
        policy_rejected=policy.sums[half:],
        reference_chosen=reference[:half],
        reference_rejected=reference[half:],
        chosen_tokens=policy.token_counts[:half],
        rejected_tokens=policy.token_counts[half:],
        sft_chosen=plain_chosen,
        chosen_weight_logps=weight_chosen,
        rejected_weight_logps=weight_rejected,
    )
