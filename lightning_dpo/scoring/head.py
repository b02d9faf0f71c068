"""The response-only LM head: label log-probs at the scored positions, in chunks.

The decoder body runs as usual; the model's LM head is replaced, for that one forward,
by a function that takes the hidden states at the scored positions only and computes each
label's log-probability through the head's weight ``chunk_size`` positions at a time, with
a custom autograd function that recomputes each chunk's logits in backward. Neither the
``[rows, T, V]`` logits nor the ``[positions, V]`` logits of the scored positions ever exist
at once: one chunk's ``[chunk_size, V]`` float32 temporaries do. WPO's per-token
``log sum_v p_v^2`` comes from the same chunks.

Tied embeddings need nothing special (the head's weight is the embedding's, and its
gradient adds to the embedding's). A head that is not a plain ``nn.Linear`` (adapted by
peft, wrapped) or logits that the model post-processes (soft-capping, scaling) are left to
the plain path: :func:`head_unsupported` says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_dpo.scoring.label_logps import chunk_label_logps, chunk_logits_grad

LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Config fields of models that transform the head's output (Gemma 2, Cohere, Granite)."""


def head_unsupported(model: nn.Module) -> str | None:
    """Why the response-only head cannot stand in for ``model``'s LM head, or ``None``."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return "the model has no output embeddings (get_output_embeddings)"
    if type(head) is not nn.Linear:
        return f"its LM head is a {type(head).__name__} (adapted or wrapped), not an nn.Linear"
    config = getattr(model, "config", None)
    for field in LOGIT_POSTPROCESSING:
        value = getattr(config, field, None)
        if value not in (None, 1, 1.0):
            return f"config.{field}={value!r} transforms the logits after the head"
    return None


class _HeadLabelLogps(torch.autograd.Function):
    """``log_softmax(hidden @ W.T + b)[label]`` in chunks; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, with_wpo):
        kind = hidden.device.type
        ctx.autocast = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        count = hidden.shape[0]
        logps = hidden.new_empty(count, dtype=torch.float32)
        normalisers = torch.empty_like(logps)
        wpo = torch.empty_like(logps) if with_wpo else logps.new_empty(0)
        for start in range(0, count, chunk_size):
            end = start + chunk_size
            logits = F.linear(hidden[start:end], weight, bias).float()
            logps[start:end], normalisers[start:end] = chunk_label_logps(logits, labels[start:end])
            if with_wpo:
                log_probs = logits - normalisers[start:end, None]
                wpo[start:end] = torch.logsumexp(2 * log_probs, dim=-1)
        ctx.save_for_backward(hidden, weight, bias, labels, normalisers)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(wpo)
        return logps, wpo

    @staticmethod
    def backward(ctx, grad_logps, _grad_wpo):
        hidden, weight, bias, labels, normalisers = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = (
            torch.zeros_like(bias, dtype=torch.float32) if bias is not None and need_bias else None
        )
        kind, enabled, dtype = ctx.autocast
        with torch.autocast(kind, dtype=dtype, enabled=enabled):
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                end = start + ctx.chunk_size
                chunk = hidden[start:end]
                logits = F.linear(chunk, weight, bias)
                grad = chunk_logits_grad(
                    logits, normalisers[start:end], labels[start:end], grad_logps[start:end]
                ).to(logits.dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad @ weight
                if grad_weight is not None and grad.dtype == chunk.dtype == torch.float32:
                    grad_weight.addmm_(grad.T, chunk)  # in place: no [V, H] temporary
                elif grad_weight is not None:
                    grad_weight += grad.T @ chunk
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        grad_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def head_label_logps(
    hidden: Tensor,
    head: nn.Linear,
    labels: Tensor,
    chunk_size: int,
    with_wpo: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``[N]`` float32 log-probs of ``labels`` under ``head(hidden)``, a chunk of rows at a time.

    Args:
        hidden: ``[N, H]`` hidden states of the scored positions.
        head: The LM head (``nn.Linear``, with or without bias).
        labels: ``[N]`` token ids.
        chunk_size: Positions per chunk.
        with_wpo: Also return WPO's ``log sum_v p_v^2`` per position (detached).

    Returns:
        The log-probs, and the WPO terms (``None`` unless asked for).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    logps, wpo = _HeadLabelLogps.apply(hidden, head.weight, head.bias, labels, chunk_size, with_wpo)
    return logps, (wpo if with_wpo else None)


@dataclass
class ScoredOutput:
    """What the response-only head computed in a forward (``None`` until it ran)."""

    logps: Tensor | None = None
    wpo: Tensor | None = None


@contextmanager
def response_head(
    model: nn.Module, positions: Tensor, labels: Tensor, chunk_size: int, with_wpo: bool
) -> Iterator[ScoredOutput]:
    """Within the block, ``model``'s LM head scores ``labels`` at ``positions`` only.

    The head's forward is replaced on the instance (no module is swapped, so wrappers,
    hooks and sharding see the same tree) by one that gathers the flat ``positions`` of
    its input, computes the label log-probs into the yielded :class:`ScoredOutput`, and
    returns an empty ``[..., 0]`` tensor as the logits. Restored in a ``finally``.
    """
    head = model.get_output_embeddings()
    output = ScoredOutput()

    def scored_forward(hidden: Tensor) -> Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        output.logps, output.wpo = head_label_logps(flat, head, labels, chunk_size, with_wpo)
        return hidden.new_empty((*hidden.shape[:-1], 0))

    previous = head.__dict__.get("forward")
    head.forward = scored_forward
    try:
        yield output
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous
