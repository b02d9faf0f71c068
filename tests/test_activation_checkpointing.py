"""Activation checkpointing: the layers are recomputed in backward, nothing else changes."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.policy import add_lora, enable_activation_checkpointing
from lightning_dpo.scoring import sequence_logps
from lightning_dpo.training import train
from tests.helpers import (
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    build_model,
    compose_train_config,
    plan_for,
    random_pairs,
)


class LayerForwards:
    """Counts the forwards inside every decoder layer (a checkpointed layer runs twice).

    transformers checkpoints the layer's ``forward``, so the layer's own hooks run once;
    its first submodule (the attention) runs again when backward recomputes the layer.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.count = 0
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        for layer in layers:
            first = next(iter(layer.children()))
            first.register_forward_hook(lambda *_: setattr(self, "count", self.count + 1))
        self.layers = len(layers)


def policy(checkpointing: bool, lora: bool) -> torch.nn.Module:
    """A tiny Llama with attention dropout: recomputation must redraw the same masks."""
    model = build_model("llama", attention_dropout=0.2).train()
    if checkpointing:
        enable_activation_checkpointing(model, "the tiny Llama")
    return add_lora(model, r=4, lora_alpha=8) if lora else model


def logps_and_grads(model, batch, response_only: bool):
    torch.manual_seed(1)
    out = sequence_logps(model, batch, plan_for(model, batch, response_only, 4))
    (out.sums * torch.linspace(-1, 1, out.sums.shape[0])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.sums.detach(), grads


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("response_only", [True, False])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpointing_gives_the_same_logps_and_gradients(layout, response_only, lora):
    batch = collate_pairs(random_pairs(6), 0, layout)
    runs = {}
    for checkpointing in (False, True):
        model = policy(checkpointing, lora)
        forwards = LayerForwards(model)
        runs[checkpointing] = logps_and_grads(model, batch, response_only)
        # Checkpointed layers run again in backward; without it, once.
        assert forwards.count == forwards.layers * (2 if checkpointing else 1)
    (plain_sums, plain_grads), (sums, grads) = runs[False], runs[True]
    torch.testing.assert_close(sums, plain_sums, rtol=1e-6, atol=1e-6)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("model", ["full", "lora"])
def test_a_checkpointed_run_trains(tmp_path, model):
    overrides = [f"model={model}", "model.activation_checkpointing=true", *LEAN_OVERRIDES]
    metrics = train(compose_train_config(tmp_path, [*overrides, *FAST_OVERRIDES]))
    assert math.isfinite(float(metrics["train/loss"]))
