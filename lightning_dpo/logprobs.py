"""Masked per-sequence log-probs from a causal language model.

Chosen and rejected responses arrive as one batch of ``2B`` rows (see
:func:`lightning_dpo.data.collate_pairs`), so the policy and the reference each run
one forward per batch instead of two.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class SequenceLogps(NamedTuple):
    """Per-sequence log-probs of the response tokens of a batch of ``N`` rows.

    Attributes:
        sums: ``[N]`` sum of the log-probs of the tokens selected by the loss mask.
        token_counts: ``[N]`` how many tokens the loss mask selected in each row.
    """

    sums: Tensor
    token_counts: Tensor


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label under its logits, computed in float32.

    Args:
        logits: ``[N, T, V]`` unnormalised scores.
        labels: ``[N, T]`` token ids to score.

    Returns:
        ``[N, T]`` float32 log-probs.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor
) -> SequenceLogps:
    """Sum the log-probs of the masked tokens of each row in one forward.

    Token ``t`` is scored by the logits at position ``t - 1``; prompt and padding
    positions (``loss_mask`` False) contribute exactly zero.

    Args:
        model: A causal LM returning an object with ``.logits`` of shape ``[N, T, V]``.
        input_ids: ``[N, T]`` prompt + response token ids, right-padded.
        attention_mask: ``[N, T]`` 1 on real tokens, 0 on padding.
        loss_mask: ``[N, T]`` True on response tokens (including EOS).

    Returns:
        The per-row sums and token counts.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    per_token = token_logps(logits[:, :-1], input_ids[:, 1:])
    mask = loss_mask[:, 1:].bool()
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    return SequenceLogps(sums=per_token.sum(-1), token_counts=mask.sum(-1))
