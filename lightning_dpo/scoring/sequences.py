"""Per-sequence log-probs of a laid-out batch: one forward, the scored tokens, their sums.

Whatever the layout (:mod:`lightning_dpo.layouts.rows`), a batch lists its scored tokens
sequence by sequence (:mod:`lightning_dpo.batch`): the ``2B`` responses, chosen first. One
forward of the policy gives each scored token's log-prob, through the response-only head
(:mod:`lightning_dpo.scoring.head`) or the model's own logits, and the tokens are summed per
sequence into a ``[2B, longest]`` table (deterministic on every device).

Per-token weightings that must apply to the policy and the reference alike happen here,
where the tokens are summed: LD-DPO's ``ld_alpha``. WPO's weights, which come from the
policy alone, are computed here too because they need the distribution at each token.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_dpo.batch import (
    INPUT_IDS_KEY,
    LOSS_MASK_KEY,
    SCORE_LABELS_KEY,
    SCORE_LENGTHS_KEY,
    SCORE_OFFSETS_KEY,
    SCORE_POSITIONS_KEY,
    SCORE_SEQUENCES_KEY,
)
from lightning_dpo.layouts.masks import forward_inputs
from lightning_dpo.losses import PairLogps
from lightning_dpo.scoring.head import response_head
from lightning_dpo.scoring.label_logps import token_logps, wpo_terms
from lightning_dpo.scoring.plan import ScoringPlan

"""Positions scored at a time by default (``PreferenceModule(logps_chunk_size=...)``)."""


class SequenceLogps(NamedTuple):
    """Per-sequence log-probs of the response tokens of a batch of ``N`` sequences.

    Attributes:
        sums: ``[N]`` sum of the log-probs of each sequence's scored tokens, each token
            weighted by LD-DPO when ``ld_alpha`` is set.
        token_counts: ``[N]`` how many tokens each sequence scored.
        plain_sums: ``[N]`` the unweighted sums when ``ld_alpha`` is set, else ``None``.
        wpo_log_weights: ``[N]`` WPO log-weight of each sequence (mean over its response
            tokens of ``log p_t - log sum_v p_v^2``), detached, when asked for; else ``None``.
    """

    sums: Tensor
    token_counts: Tensor
    plain_sums: Tensor | None = None
    wpo_log_weights: Tensor | None = None


class ScoredTokens(NamedTuple):
    """The scored tokens of a batch (see :class:`~lightning_dpo.batch.PreferenceBatch`).

    Attributes:
        positions: ``[N]`` flat index of each token's predicting hidden state.
        labels: ``[N]`` token ids.
        sequences: ``[N]`` each token's sequence.
        offsets: ``[N]`` each token's index in its response.
        lengths: ``[2B]`` tokens per sequence.
        width: The longest sequence's token count (read once from the device).
    """

    positions: Tensor
    labels: Tensor
    sequences: Tensor
    offsets: Tensor
    lengths: Tensor
    width: int


def scored_tokens(batch: dict[str, Any]) -> ScoredTokens:
    """The batch's scored-token index, or one derived from a padded batch's ``loss_mask``."""
    if SCORE_POSITIONS_KEY in batch:
        lengths = batch[SCORE_LENGTHS_KEY]
        return ScoredTokens(
            batch[SCORE_POSITIONS_KEY],
            batch[SCORE_LABELS_KEY],
            batch[SCORE_SEQUENCES_KEY],
            batch[SCORE_OFFSETS_KEY],
            lengths,
            int(lengths.max()) if lengths.numel() else 0,
        )
    input_ids, mask = batch[INPUT_IDS_KEY], batch[LOSS_MASK_KEY].bool()
    rows, columns = mask.nonzero(as_tuple=True)  # row-major: sequence by sequence
    lengths = mask.sum(-1)
    starts = torch.cumsum(lengths, 0) - lengths
    return ScoredTokens(
        rows * input_ids.shape[1] + columns - 1,
        input_ids[rows, columns],
        rows,
        torch.arange(rows.shape[0], device=rows.device) - starts[rows],
        lengths,
        int(lengths.max()) if lengths.numel() else 0,
    )


def by_sequence(values: Tensor, scored: ScoredTokens) -> Tensor:
    """``[sequences, longest]`` table of per-token ``values`` (0 where a sequence is shorter)."""
    table = values.new_zeros(scored.lengths.shape[0], scored.width)
    return table.index_put((scored.sequences, scored.offsets), values)


def ld_token_weights(scored: ScoredTokens, counts: Tensor, ld_alpha: float) -> Tensor:
    """LD-DPO's per-token weights: 1 up to the shorter response's length, ``ld_alpha`` after.

    Liu et al. 2024, "Length Desensitization in Preference Optimization",
    https://arxiv.org/abs/2409.06411: the likelihood of a response splits into its first
    ``l_p = min(l_chosen, l_rejected)`` tokens (the length both responses share) and the
    excess; the excess log-likelihood is scaled by ``ld_alpha``, in the policy and the
    reference alike.

    Args:
        scored: The scored tokens; sequences ``i`` and ``i + B`` are pair ``i``'s.
        counts: ``[2B]`` tokens per sequence.
        ld_alpha: Weight of the excess tokens, in ``[0, 1]``.

    Returns:
        ``[N]`` float32 weights of the scored tokens.

    Raises:
        ValueError: If the batch does not have an even number of sequences.
    """
    sequences = counts.shape[0]
    if sequences % 2:
        raise ValueError(f"LD-DPO needs [chosen; rejected] sequences, got {sequences}")
    shared = torch.minimum(counts[: sequences // 2], counts[sequences // 2 :]).repeat(2)
    return torch.where(scored.offsets < shared[scored.sequences], 1.0, ld_alpha).float()


def label_logps(
    model: nn.Module,
    batch: dict[str, Any],
    scored: ScoredTokens,
    plan: ScoringPlan,
    *,
    with_wpo: bool,
) -> tuple[Tensor, Tensor | None]:
    """``[N]`` log-probs of the scored tokens (and WPO's terms) from one forward of ``model``.

    ``plan.response_only``: through :func:`~lightning_dpo.scoring.head.response_head`;
    else from the model's logits, of which only the scored rows are scored.
    """
    inputs = forward_inputs(model, batch, plan.shared_rows, plan.attention)
    if plan.response_only:
        head = response_head(model, scored.positions, scored.labels, plan.chunk_size, with_wpo)
        with head as out:
            model(**inputs, use_cache=False)
        if out.logps is None:
            raise RuntimeError(
                f"{type(model).__name__} never called its output embeddings: score it with "
                "response_only=False (module.response_head=false)"
            )
        return out.logps, out.wpo
    logits = model(**inputs, use_cache=False).logits
    rows = logits.reshape(-1, logits.shape[-1]).index_select(0, scored.positions)
    wpo = wpo_terms(rows) if with_wpo else None
    return token_logps(rows, scored.labels, plan.chunk_size), wpo


def sequence_logps(
    model: nn.Module,
    batch: dict[str, Any],
    plan: ScoringPlan,
    *,
    ld_alpha: float | None = None,
    wpo_weights: bool = False,
) -> SequenceLogps:
    """Sum the log-probs of each sequence's scored tokens, in one forward of ``model``.

    Args:
        model: A causal LM (``transformers`` model or a peft wrapper of one).
        batch: A batch laid out as ``plan.layout`` (:mod:`lightning_dpo.layouts.rows`); a
            padded one may carry ``input_ids``, ``attention_mask`` and ``loss_mask`` only.
        plan: How to score it: the layout, the head, the chunk size
            (:class:`~lightning_dpo.scoring.plan.ScoringPlan`).
        ld_alpha: LD-DPO weight of the tokens past the shorter response of each pair;
            ``None`` sums them plainly.
        wpo_weights: Also compute WPO's per-sequence log-weights.

    Returns:
        The per-sequence sums and token counts (and the plain sums / WPO log-weights).
    """
    scored = scored_tokens(batch)
    per_token, wpo = label_logps(model, batch, scored, plan, with_wpo=wpo_weights)
    counts = scored.lengths
    sums, plain = by_sequence(per_token, scored).sum(-1), None
    if ld_alpha is not None:
        weights = ld_token_weights(scored, counts, ld_alpha)
        plain, sums = sums, by_sequence(per_token * weights, scored).sum(-1)
    log_weights = None
    if wpo is not None:
        adjusted = by_sequence(per_token.detach() - wpo, scored).sum(-1)
        log_weights = adjusted / counts.clamp(min=1)
    return SequenceLogps(sums, counts, plain, log_weights)


def pair_logps(policy: SequenceLogps, reference: Tensor) -> PairLogps:
    """Split ``[chosen; rejected]`` sequences of the policy and the reference into pairs.

    Args:
        policy: The policy's log-probs of the ``2B`` sequences.
        reference: ``[2B]`` the reference's summed log-probs of the same sequences.

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
