"""The reference bracket: in-place swap, exact restoration, dropout off, adapters."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import lightning_dpo
from lightning_dpo.reference import (
    AdapterDisabledReference,
    HostSnapshotReference,
    SnapshotPlacement,
    eval_mode,
    reference_context,
)
from lightning_dpo.reference.node_share import NodeShare
from lightning_dpo.scoring import sequence_logps
from tests.helpers import plan_for


def _logps(model, batch):
    return sequence_logps(model, batch, plan_for(model, batch))


def _state(model):
    """Everything a bracket must give back: weights (cloned), grad flags, modes."""
    return (
        {name: p.detach().clone() for name, p in model.named_parameters()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: m.training for name, m in model.named_modules()},
    )


def _assert_same_state(model, before):
    weights, flags, modes = _state(model)
    assert weights.keys() == before[0].keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, before[0][name]), name
    assert flags == before[1]
    assert modes == before[2]


def _perturb(model, scale=0.05):
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn_like(param))


@pytest.fixture
def mixed_policy(tiny_policy):
    """A policy with a frozen embedding, one module in eval mode, the rest training."""
    tiny_policy.get_input_embeddings().weight.requires_grad_(False)
    tiny_policy.train()
    tiny_policy.model.layers[0].mlp.eval()
    return tiny_policy


def test_snapshot_holds_only_trainable_parameters(mixed_policy):
    snapshot = HostSnapshotReference.capture(mixed_policy)
    trainable = {n for n, p in mixed_policy.named_parameters() if p.requires_grad}
    assert set(snapshot.snapshot) == trainable
    assert "model.embed_tokens.weight" not in snapshot.snapshot
    assert all(t.device.type == "cpu" for t in snapshot.snapshot.values())
    expected = sum(
        p.numel() * p.element_size() for n, p in mixed_policy.named_parameters() if p.requires_grad
    )
    assert snapshot.nbytes == expected


def test_bracket_computes_reference_and_restores_everything(mixed_policy, batch):
    initial = copy.deepcopy(mixed_policy).eval()
    snapshot = HostSnapshotReference.capture(mixed_policy)
    _perturb(mixed_policy)
    before = _state(mixed_policy)

    with reference_context(snapshot, mixed_policy):
        assert not any(m.training for m in mixed_policy.modules())
        assert not torch.is_grad_enabled()
        reference = _logps(mixed_policy, batch).sums

    with torch.no_grad():
        expected = _logps(initial, batch).sums
    assert torch.equal(reference, expected)
    _assert_same_state(mixed_policy, before)
    assert not snapshot.in_flight


def test_bracket_restores_when_the_reference_forward_raises(mixed_policy, batch):
    snapshot = HostSnapshotReference.capture(mixed_policy)
    _perturb(mixed_policy)
    before = _state(mixed_policy)

    with pytest.raises(RuntimeError, match="injected"), reference_context(snapshot, mixed_policy):
        _logps(mixed_policy, batch)
        raise RuntimeError("injected failure in the reference forward")

    _assert_same_state(mixed_policy, before)
    assert not snapshot.in_flight


def test_restore_is_the_second_guard_for_a_swap_left_in_flight(mixed_policy):
    snapshot = HostSnapshotReference.capture(mixed_policy)
    _perturb(mixed_policy)
    before = _state(mixed_policy)
    bracket = snapshot.reference(mixed_policy)
    bracket.__enter__()  # a swap in flight, as when an exception escapes mid-bracket
    assert snapshot.in_flight
    name = next(iter(snapshot.snapshot))
    assert torch.equal(dict(mixed_policy.named_parameters())[name], snapshot.snapshot[name])
    snapshot.restore()
    _assert_same_state(mixed_policy, before)
    snapshot.restore()  # idempotent
    _assert_same_state(mixed_policy, before)


def test_nested_swap_is_refused(tiny_policy):
    snapshot = HostSnapshotReference.capture(tiny_policy)
    with snapshot.reference(tiny_policy), pytest.raises(RuntimeError, match="nested"):  # noqa: SIM117
        with snapshot.reference(tiny_policy):
            pass


def test_snapshot_is_matched_by_name_and_refuses_a_different_model(tiny_policy, tokenizer):
    snapshot = HostSnapshotReference.capture(tiny_policy)
    reordered = dict(reversed(list(snapshot.snapshot.items())))
    HostSnapshotReference(reordered).reference(tiny_policy).__enter__()
    with pytest.raises(RuntimeError, match="lacks"):  # noqa: SIM117
        with snapshot.reference(torch.nn.Linear(2, 2)):
            pass


def test_eval_mode_restores_each_modules_previous_flag(mixed_policy):
    before = {name: m.training for name, m in mixed_policy.named_modules()}
    with eval_mode(mixed_policy):
        assert not any(m.training for m in mixed_policy.modules())
    assert {name: m.training for name, m in mixed_policy.named_modules()} == before


def test_dropout_is_off_in_the_reference_forward(tokenizer, batch):
    from lightning_dpo.policy import build_tiny_llama

    torch.manual_seed(0)
    model = build_tiny_llama(
        tokenizer,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        attention_dropout=0.5,
    )
    model.train()
    snapshot = HostSnapshotReference.capture(model)
    runs = []
    for _ in range(2):
        with reference_context(snapshot, model):
            runs.append(_logps(model, batch).sums)
    assert torch.equal(runs[0], runs[1])
    assert model.training


def test_adapter_reference_is_the_base_model(lora_policy, batch):
    base = copy.deepcopy(lora_policy.get_base_model())
    # Give the adapters non-zero weights so that policy and base differ.
    with torch.no_grad():
        for name, param in lora_policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    lora_policy.train()
    strategy = AdapterDisabledReference()
    with reference_context(strategy, lora_policy):
        reference = _logps(lora_policy, batch).sums
    with torch.no_grad():
        base_logps = _logps(base.eval(), batch).sums
        policy_logps = _logps(lora_policy.eval(), batch).sums
    assert torch.equal(reference, base_logps)
    assert not torch.allclose(policy_logps, base_logps)
    assert strategy.nbytes == 0


def test_adapter_reference_refuses_a_plain_model(tiny_policy):
    with pytest.raises(TypeError, match="not a peft model"):  # noqa: SIM117
        with AdapterDisabledReference().reference(tiny_policy):
            pass


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_chunked_token_logps_equal_the_plain_log_softmax(chunk_size):
    from lightning_dpo.scoring import token_logps

    torch.manual_seed(0)
    logits = (torch.randn(52, 50) * 5).requires_grad_()
    labels = torch.randint(0, 50, (52,))
    plain = token_logps(logits, labels)
    chunked = token_logps(logits, labels, chunk_size)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=4e-6)
    (grad_plain,) = torch.autograd.grad(plain.sum(), logits)
    (grad_chunked,) = torch.autograd.grad(chunked.sum(), logits)
    torch.testing.assert_close(grad_chunked, grad_plain, rtol=0, atol=1e-6)


def test_chunked_sequence_logps_equal_plain_on_a_model(tiny_policy, batch):
    with torch.no_grad():
        plain = sequence_logps(tiny_policy.eval(), batch, plan_for(tiny_policy, batch, False, None))
        chunked = sequence_logps(tiny_policy, batch, plan_for(tiny_policy, batch, False, 5))
    torch.testing.assert_close(chunked.sums, plain.sums, rtol=1e-6, atol=1e-5)
    assert torch.equal(chunked.token_counts, plain.token_counts)


def test_one_placement_serves_a_fresh_and_a_restored_snapshot(tiny_policy):
    """Pinning, swaps and the node share are decided once; a recorded snapshot keeps its dtype."""
    share = NodeShare(0, 2, 0, "token", barrier=lambda: None, pin=True)
    placement = SnapshotPlacement.decide(tiny_policy, torch.bfloat16, "copy", share)
    assert placement.pin is False  # host parameters: nothing to pin
    assert placement.share == NodeShare(0, 2, 0, "token", placement.share.barrier, pin=False)
    fresh = HostSnapshotReference.capture(tiny_policy, placement.unshared())
    assert {t.dtype for t in fresh.snapshot.values()} == {torch.bfloat16}
    restored = HostSnapshotReference.from_state(
        fresh.state_dict(), tiny_policy, placement.unshared(), "step4.ckpt"
    )
    assert restored.placement == placement.unshared().keeping_dtypes()
    assert (restored.pin_memory, restored.swap_mode) == (fresh.pin_memory, fresh.swap_mode)
    assert restored.fingerprint == fresh.fingerprint


def test_pinning_is_decided_in_one_place():
    package = Path(lightning_dpo.__file__).parent
    deciding = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "is_cuda" in path.read_text()  # whether the policy is on a CUDA device
    )
    assert deciding == ["reference/weights/placement.py"]
