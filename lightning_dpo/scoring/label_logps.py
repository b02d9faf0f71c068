"""Label log-probs from materialised logits: the plain path, chunked over positions.

Used where the response-only head (:mod:`lightning_dpo.scoring.head`) cannot stand in for
the model's head: the model computes its logits, and the scored positions' rows are scored
here, ``chunk_size`` positions at a time, without the full float32 log-softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_label_logps(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``logit[label] - logsumexp(logits)`` of a float32 chunk, and its ``logsumexp``.

    Args:
        logits: ``[C, V]`` float32 logits of a chunk of positions.
        labels: ``[C]`` the token ids to score.
    """
    normalisers = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - normalisers, normalisers


def chunk_logits_grad(
    logits: Tensor, normalisers: Tensor, labels: Tensor, upstream: Tensor
) -> Tensor:
    """The float32 gradient ``g * (onehot(label) - softmax)`` of a chunk's label log-probs.

    Args:
        logits: ``[C, V]`` the chunk's logits (any float dtype).
        normalisers: ``[C]`` their ``logsumexp`` from the forward.
        labels: ``[C]`` the scored token ids.
        upstream: ``[C]`` the gradient of each label log-prob.
    """
    upstream = upstream.unsqueeze(-1)
    grad = torch.exp(logits.float() - normalisers.unsqueeze(-1)).mul_(-upstream)
    return grad.scatter_add_(-1, labels.unsqueeze(-1), upstream)


class _ChunkedLabelLogps(torch.autograd.Function):
    """``logit[label] - logsumexp(logits)`` over position chunks, with a chunked backward.

    Forward keeps only the logits (which exist anyway) and the ``[N]`` log-normalisers;
    backward writes each chunk's gradient ``g * (onehot - softmax)`` straight into one
    gradient buffer. Peak extra memory is one chunk of float32 temporaries plus the
    gradient itself, instead of the full float32 log-softmax, its saved copy and a
    scattered one-hot gradient.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, chunk_size: int) -> Tensor:
        out = logits.new_empty(labels.shape, dtype=torch.float32)
        normalisers = torch.empty_like(out)
        for start in range(0, labels.shape[0], chunk_size):
            end = start + chunk_size
            scores = chunk_label_logps(logits[start:end].float(), labels[start:end])
            out[start:end], normalisers[start:end] = scores
        ctx.save_for_backward(logits, labels, normalisers)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        logits, labels, normalisers = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, labels.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            grad[start:end] = chunk_logits_grad(
                logits[start:end], normalisers[start:end], labels[start:end], grad_out[start:end]
            )
        return grad, None, None


def token_logps(logits: Tensor, labels: Tensor, chunk_size: int | None = None) -> Tensor:
    """Log-probability of each label under its logits, computed in float32.

    With ``chunk_size`` the rows are scored ``chunk_size`` at a time as
    ``logit[label] - logsumexp(logits)`` (forward and backward), so the float32
    log-softmax is never materialised nor kept for backward. Equal to the plain computation
    within float32 rounding; ``bench/bench_logprobs.py`` measures the memory.

    Args:
        logits: ``[N, V]`` unnormalised scores of the scored positions.
        labels: ``[N]`` token ids to score.
        chunk_size: Positions per chunk; ``None`` computes a full ``log_softmax``.

    Returns:
        ``[N]`` float32 log-probs.
    """
    if chunk_size is None:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    return _ChunkedLabelLogps.apply(logits, labels, chunk_size)


def wpo_terms(logits: Tensor) -> Tensor:
    """WPO's ``log sum_v p_v^2`` of each row of ``[N, V]`` logits, under ``no_grad``."""
    with torch.no_grad():
        return torch.logsumexp(2 * torch.log_softmax(logits.float(), dim=-1), dim=-1)
