"""The response-only head under peft and autocast, and where it and the layouts fall back."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch
import transformers

from lightning_dpo import PreferenceLoss, PreferenceModule
from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.layouts import masks as mask_module
from lightning_dpo.policy import add_lora
from lightning_dpo.scoring import (
    head_unsupported,
    resolve_layout,
    response_head_unsupported,
    sequence_logps,
)
from tests.helpers import VOCAB, build_model, plan_for, random_pairs


def sums_and_grads(model, batch, head: bool):
    model.zero_grad()
    out = sequence_logps(model, batch, plan_for(model, batch, head, 4))
    (out.sums * torch.linspace(-1, 1, out.sums.shape[0])).sum().backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return out.sums.detach(), torch.cat(grads)


def test_lora_policy_scores_through_the_head_exactly():
    """LoRA leaves the head alone: the head stands in, exact in values and adapter grads."""
    lora_policy = add_lora(build_model("llama"), r=4, lora_alpha=8)
    assert response_head_unsupported(lora_policy) is None
    pairs = random_pairs()
    batch = collate_pairs(pairs, 0, "packed")
    lora_policy.eval()
    with torch.no_grad():  # make the adapter do something (lora_B starts at zero)
        for name, parameter in lora_policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    plain, plain_grads = sums_and_grads(lora_policy, collate_pairs(pairs, 0, "padded"), False)
    ours, grads = sums_and_grads(lora_policy, batch, True)
    torch.testing.assert_close(ours, plain, rtol=0, atol=2e-5)
    torch.testing.assert_close(grads, plain_grads, rtol=0, atol=2e-5)


def test_an_adapted_head_falls_back_and_says_why(tiny_policy, caplog):
    adapted = add_lora(tiny_policy, r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    assert "adapted or wrapped" in head_unsupported(adapted)
    module = PreferenceModule(adapted, PreferenceLoss("dpo"), partial(torch.optim.SGD, lr=0.1))
    with caplog.at_level(logging.INFO):
        assert module.plan_scoring().response_only is False
    assert "Response-only LM head off: its LM head is a" in caplog.text


def test_soft_capped_logits_fall_back():
    config = transformers.Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=30.0,
    )
    model = transformers.Gemma2ForCausalLM(config)
    assert "final_logit_softcapping=30.0" in head_unsupported(model)


def test_head_under_bf16_autocast_matches_the_plain_path():
    model, pairs = build_model("llama"), random_pairs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, plain_grads = sums_and_grads(model, collate_pairs(pairs, 0, "padded"), False)
        ours, grads = sums_and_grads(model, collate_pairs(pairs, 0, "packed"), True)
    torch.testing.assert_close(ours, plain, rtol=0.02, atol=0.5)
    cosine = torch.nn.functional.cosine_similarity(grads, plain_grads, dim=0)
    assert cosine > 0.999


def test_a_mask_the_model_ignores_is_caught_by_the_probe(monkeypatch, caplog):
    """An eager model given a boolean mask adds it to the scores: silently wrong, probed."""
    model = build_model("llama", "eager")
    assert resolve_layout("auto", model) == "packed"  # the additive mask: exact
    monkeypatch.setattr(mask_module, "as_model_mask", lambda allowed, *_: allowed)
    with pytest.raises(
        ValueError, match=r"data.batches.layout=prefix_shared cannot run LlamaForCausalLM"
    ):
        resolve_layout("prefix_shared", model)
    with caplog.at_level(logging.INFO):
        assert resolve_layout("auto", model) == "padded"
    assert "differ from the padded layout's by" in caplog.text


def test_attention_without_custom_masks_is_refused_by_name():
    model = build_model("llama")
    model.config._attn_implementation = "flash_attention_2"  # not installed here: named only
    with pytest.raises(ValueError, match="'flash_attention_2' does not take a custom 4-D mask"):
        resolve_layout("packed", model)
    assert resolve_layout("padded", model) == "padded"
    with pytest.raises(ValueError, match=r"data.batches.layout must be one of \['auto', 'padded'"):
        resolve_layout("rows", model)
