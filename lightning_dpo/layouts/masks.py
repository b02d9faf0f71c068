"""The model inputs of a laid-out batch: the attention mask a shared row needs.

A ``padded`` batch runs with the model's own 2-D mask. A ``prefix_shared`` or ``packed``
row needs a custom 4-D mask (a token sees the earlier tokens of its own pair, and a
rejected token never the chosen ones) and explicit position ids. transformers passes a 4-D
mask to the attention as it is: ``sdpa`` reads a boolean mask (True = attend), ``eager``
adds the mask to the scores, so it gets an additive float mask (0 or the dtype's minimum;
a boolean one would be silently wrong there). Models with a sliding window get it applied
in the mask too, per layer type where the config lists layer types.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_dpo.batch import (
    ATTENTION_MASK_KEY,
    BRANCHES_KEY,
    INPUT_IDS_KEY,
    PAIR_SLOTS_KEY,
    POSITION_IDS_KEY,
)

MASK_IMPLEMENTATIONS = ("sdpa", "eager")
"""Attention implementations whose custom 4-D masks this module builds."""


def attention_implementation(model: nn.Module) -> str:
    """The model's attention implementation (``config._attn_implementation``), or ``"?"``."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "?")


def mask_unsupported(model: nn.Module) -> str | None:
    """Why a shared row's mask cannot be given to ``model``, or ``None`` if it can."""
    implementation = attention_implementation(model)
    if implementation not in MASK_IMPLEMENTATIONS:
        return (
            f"its attention implementation {implementation!r} does not take a custom 4-D "
            f"mask here (supported: {', '.join(MASK_IMPLEMENTATIONS)})"
        )
    return None


def allowed_keys(
    slots: Tensor, branches: Tensor, positions: Tensor, window: int | None = None
) -> Tensor:
    """``[R, 1, T, T]`` bool: which keys each query of a shared row may attend to.

    A query sees a key of its own pair that is not after it and is a prompt token or in its
    own branch (and within ``window`` positions, for a sliding window). A padding query
    sees itself only, so that no softmax row is empty.
    """
    length = slots.shape[-1]
    query_slot, key_slot = slots[:, :, None], slots[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=slots.device).tril()
    key_branch = branches[:, None, :]
    allowed = (query_slot == key_slot) & (key_slot >= 0) & causal
    allowed &= (key_branch == 0) | (key_branch == branches[:, :, None])
    if window is not None:
        allowed &= (positions[:, :, None] - positions[:, None, :]) < window
    diagonal = torch.eye(length, dtype=torch.bool, device=slots.device)
    allowed |= diagonal & (query_slot < 0)
    return allowed[:, None]


def as_model_mask(allowed: Tensor, implementation: str, dtype: torch.dtype) -> Tensor:
    """``allowed`` in the form ``implementation`` reads (bool, or additive float of ``dtype``)."""
    if implementation == "eager":
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return additive.masked_fill_(~allowed, torch.finfo(dtype).min)
    return allowed


def sliding_windows(config: Any) -> dict[str, int | None] | None:
    """Per layer type its window (``None``: full attention), or ``None`` for one mask.

    A config with ``layer_types`` gets one mask per type (the model takes a mapping); else
    a config ``sliding_window`` applies to every layer (Mistral).
    """
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return {kind: window if "sliding" in kind else None for kind in set(layer_types)}
    return {"": window} if isinstance(window, int) else None


def forward_inputs(
    model: nn.Module, batch: dict[str, Any], shared_rows: bool, implementation: str
) -> dict[str, Any]:
    """The keyword arguments of the model forward for a laid-out batch.

    Args:
        model: The model (its config's sliding windows, its parameters' dtype).
        batch: The batch.
        shared_rows: Whether the batch is ``prefix_shared`` or ``packed`` (decided with the
            layout; checked against the model then, not here).
        implementation: The model's attention implementation, for the mask's form.
    """
    input_ids = batch[INPUT_IDS_KEY]
    expected = PAIR_SLOTS_KEY if shared_rows else ATTENTION_MASK_KEY
    if expected not in batch:
        planned = "prefix_shared or packed" if shared_rows else "padded"
        raise ValueError(
            f"the scoring plan says {planned}, but this batch has no '{expected}': lay the "
            "batches out as planned, or plan for their layout (PreferenceModule.plan_scoring)"
        )
    if not shared_rows:
        return {INPUT_IDS_KEY: input_ids, ATTENTION_MASK_KEY: batch[ATTENTION_MASK_KEY]}
    dtype = next(model.parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    slots, branches, positions = (
        batch[PAIR_SLOTS_KEY],
        batch[BRANCHES_KEY],
        batch[POSITION_IDS_KEY],
    )
    windows = sliding_windows(model.config) or {"": None}
    masks = {
        kind: as_model_mask(allowed_keys(slots, branches, positions, window), implementation, dtype)
        for kind, window in windows.items()
    }
    mask: Any = masks.get("", masks)
    return {INPUT_IDS_KEY: input_ids, POSITION_IDS_KEY: positions, ATTENTION_MASK_KEY: mask}
