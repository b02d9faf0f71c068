"""Exactness probes, and the scoring plan they decide (:func:`resolve_plan`).

A layout or the response-only head is used only where it is exact.
Each probe scores two fixed random pairs both ways, in eval mode without gradients: the
``padded`` layout through the model's own logits (the reference), and the layout or head
under test. A layout whose mask the model does not honour (another attention
implementation, an architecture that rebuilds its mask) or a head the model post-processes
shows up as a difference. In float32 the probe separates rounding (about 1e-5 on these sums)
from a wrong mask (1e-3 and more, even on a random model); for 16-bit weights its tolerance
is coarse.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_dpo.eval_mode import eval_mode
from lightning_dpo.layouts.masks import attention_implementation, mask_unsupported
from lightning_dpo.layouts.rows import check_layout, lay_out
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.scoring.head import head_unsupported
from lightning_dpo.scoring.plan import DEFAULT_LOGPS_CHUNK_SIZE, ScoringPlan, check_chunk_size
from lightning_dpo.scoring.sequences import sequence_logps

FASTEST_LAYOUT = "packed"
"""What ``auto`` picks where the model honours it: never more positions nor attention per
row than ``prefix_shared``, and fewer rows."""


def probe_pairs(vocab_size: int) -> list[TokenizedPair]:
    """Two pairs of fixed random tokens, of different lengths (a packed row holds both)."""
    generator = torch.Generator().manual_seed(0)

    def tokens(count: int) -> tuple[int, ...]:
        return tuple(torch.randint(0, vocab_size, (count,), generator=generator).tolist())

    return [
        TokenizedPair(tokens(6), tokens(3), tokens(5)),
        TokenizedPair(tokens(4), tokens(4), tokens(2)),
    ]


def tolerance(model: nn.Module) -> float:
    """Largest difference of a probe's summed log-probs that counts as rounding."""
    dtype = next(model.parameters()).dtype
    return 1e-3 if dtype in (torch.float32, torch.float64) else 0.5


def probe_difference(
    model: nn.Module,
    layout: str,
    response_only: bool,
    chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
) -> float:
    """Max |difference| of the probe pairs' summed log-probs from the plain padded ones.

    The layout (and head) under test score in ``chunk_size`` positions (the run's
    ``module.logps_chunk_size``) where the head is on; the reference scores plainly.
    """
    pairs = probe_pairs(model.get_input_embeddings().num_embeddings)
    device = next(model.parameters()).device

    def scored(name: str, head: bool) -> torch.Tensor:
        batch = {k: v.to(device) for k, v in lay_out(pairs, 0, name).items()}
        chunk = chunk_size if head else None
        plan = ScoringPlan(name, head, chunk, attention_implementation(model))
        return sequence_logps(model, batch, plan).sums

    with torch.no_grad(), eval_mode(model):
        expected = scored("padded", False)
        actual = scored(layout, response_only)
    return float((actual.float() - expected.float()).abs().max())


def layout_unsupported(model: nn.Module, layout: str) -> str | None:
    """Why ``model`` cannot run ``layout`` exactly, or ``None`` (``padded`` always can)."""
    if layout == "padded":
        return None
    reason = mask_unsupported(model)
    if reason is not None:
        return reason
    difference = probe_difference(model, layout, response_only=False)
    if difference > tolerance(model):
        return (
            f"its log-probs in this layout differ from the padded layout's by {difference:.3g} "
            f"(its architecture does not honour the custom attention mask)"
        )
    return None


def resolve_layout(requested: str, model: nn.Module) -> str:
    """The layout to run: ``requested``, or for ``auto`` the fastest exact one.

    Raises:
        ValueError: For an unknown name, or a layout ``model`` cannot run exactly (naming
            why and the layout that always works).
    """
    check_layout(requested)
    candidate = FASTEST_LAYOUT if requested == "auto" else requested
    reason = layout_unsupported(model, candidate)
    if reason is None:
        if requested == "auto":
            rank_zero_info(f"data.batches.layout=auto: {candidate} (exact on this model: probed).")
        return candidate
    kind = type(model).__name__
    if requested != "auto":
        raise ValueError(f"data.batches.layout={requested} cannot run {kind}: {reason}; use padded")
    rank_zero_info(
        f"data.batches.layout=auto: padded, because {kind} cannot take {candidate}: {reason}."
    )
    return "padded"


def response_head_unsupported(
    model: nn.Module, chunk_size: int = DEFAULT_LOGPS_CHUNK_SIZE
) -> str | None:
    """Why the response-only head cannot stand in for ``model``'s, or ``None`` if it can.

    Probed as it will run: ``chunk_size`` positions at a time (``module.logps_chunk_size``).
    """
    reason = head_unsupported(model)
    if reason is not None:
        return reason
    difference = probe_difference(model, "padded", True, chunk_size)
    if difference > tolerance(model):
        return f"its log-probs differ from the model's own logits by {difference:.3g}"
    return None


def resolve_plan(
    policy: nn.Module,
    layout: str = "auto",
    response_head: bool = True,
    chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
) -> ScoringPlan:
    """Probe ``policy`` once and decide its plan; the decisions are logged.

    Args:
        policy: The policy, before the strategy places or shards it.
        layout: ``data.batches.layout``: ``auto`` (the fastest exact layout) or a layout name.
        response_head: ``module.response_head``: use the response-only head where exact.
        chunk_size: ``module.logps_chunk_size``.

    Raises:
        ValueError: An unknown layout, a layout the policy cannot run exactly, or a bad
            chunk size.
    """
    check_chunk_size(chunk_size)
    runnable = resolve_layout(layout, policy)
    response_only = False
    if response_head and chunk_size is not None:
        reason = response_head_unsupported(policy, chunk_size)
        if reason is None:
            rank_zero_info("Response-only LM head: on (exact on this model: probed).")
            response_only = True
        else:
            rank_zero_info(f"Response-only LM head off: {reason}; scoring the logits.")
    return ScoringPlan(runnable, response_only, chunk_size, attention_implementation(policy))
