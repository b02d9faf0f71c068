"""Layouts and the response-only head: exact against the padded two-row layout, isolated.

Every layout (``prefix_shared``, ``packed``) with and without the response-only head gives
the padded layout's per-sequence log-probs and their gradients within float32 rounding,
on tiny random Llama (sdpa and eager attention), Qwen2, Mistral (with a sliding window
shorter than the rows) and GPT-2 (absolute positions) models.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.layouts.rows import pack_rows
from lightning_dpo.pairs import TokenizedPair
from lightning_dpo.scoring import DEFAULT_LOGPS_CHUNK_SIZE, sequence_logps
from tests.helpers import (
    TINY_CONFIGS,
    VOCAB,
    build_model,
    plan_for,
    random_pairs,
    small_datamodule,
)

MODELS = {
    "llama": {},
    "llama-eager": {"attention": "eager"},
    "qwen2": {},
    "mistral": {"sliding_window": 6},
    # Layer 0 full attention, layer 1 a window of 6: one mask per layer type.
    "qwen2-window": {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1},
    "gpt2": {},
}


def model_for(name: str) -> torch.nn.Module:
    options = dict(MODELS[name])
    return build_model(name.split("-")[0], options.pop("attention", "sdpa"), **options)


def scored(model, pairs, layout, head, grad=False, **options):
    """Summed log-probs of ``pairs`` in ``layout`` (and the parameters' gradient of a sum)."""
    batch = collate_pairs(pairs, 0, layout)
    model.zero_grad()
    with torch.set_grad_enabled(grad):
        chunk = options.pop("chunk_size", DEFAULT_LOGPS_CHUNK_SIZE)
        out = sequence_logps(model, batch, plan_for(model, batch, head, chunk), **options)
    if not grad:
        return out, None
    weights = torch.linspace(-1.0, 1.0, out.sums.shape[0])  # a loss that weighs each row
    (out.sums * weights).sum().backward()
    return out, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("layout", ["padded", "prefix_shared", "packed"])
@pytest.mark.parametrize("head", [False, True])
def test_every_layout_and_head_equal_the_padded_plain_path(name, layout, head):
    model, pairs = model_for(name), random_pairs()
    expected, expected_grad = scored(model, pairs, "padded", False, grad=True, chunk_size=None)
    options = {"ld_alpha": 0.5, "wpo_weights": True, "chunk_size": 4}
    plain_options, _ = scored(model, pairs, "padded", False, ld_alpha=0.5, wpo_weights=True)
    actual, grad = scored(model, pairs, layout, head, grad=True, chunk_size=4)
    torch.testing.assert_close(actual.sums, expected.sums, rtol=0, atol=2e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=2e-5)
    assert torch.equal(actual.token_counts, expected.token_counts)
    # The reference's forward (no grad), with LD-DPO and WPO computed on the way.
    reference, _ = scored(model, pairs, layout, head, **options)
    torch.testing.assert_close(reference.sums, plain_options.sums, rtol=0, atol=2e-5)
    torch.testing.assert_close(reference.plain_sums, expected.sums, rtol=0, atol=2e-5)
    torch.testing.assert_close(
        reference.wpo_log_weights, plain_options.wpo_log_weights, rtol=0, atol=2e-5
    )


def test_sliding_window_is_in_the_mask():
    """Mistral's window of 6 is shorter than the rows: without it the layouts would differ."""
    model, pairs = model_for("mistral"), random_pairs()
    windowed, _ = scored(model, pairs, "packed", True)
    wide = build_model("mistral", sliding_window=64)
    wide.load_state_dict(model.state_dict())
    unwindowed, _ = scored(wide, pairs, "packed", True)
    assert not torch.allclose(windowed.sums, unwindowed.sums, atol=1e-3)


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_a_chosen_token_never_reaches_the_rejected_response(layout):
    model, pairs = model_for("llama"), random_pairs()
    before, _ = scored(model, pairs, layout, True)
    changed = list(pairs)
    first = changed[0]
    chosen = ((first.chosen_ids[0] + 1) % VOCAB, *first.chosen_ids[1:])
    changed[0] = TokenizedPair(first.prompt_ids, chosen, first.rejected_ids)
    after, _ = scored(model, changed, layout, True)
    count = len(pairs)
    assert not torch.equal(after.sums[0], before.sums[0])  # the chosen response did change
    assert torch.equal(after.sums[count:], before.sums[count:])  # every rejected: bitwise
    assert torch.equal(after.sums[1:count], before.sums[1:count])


def test_pairs_packed_in_one_row_are_blind_to_each_other():
    """Changing one pair of a packed row leaves every other pair bitwise as it was.

    A long pair alone in the first row; the two short ones share the second.
    """
    model, generator = model_for("llama"), torch.Generator().manual_seed(3)

    def pair(prompt: int, chosen: int, rejected: int) -> TokenizedPair:
        ids = torch.randint(3, VOCAB, (prompt + chosen + rejected,), generator=generator).tolist()
        return TokenizedPair(
            tuple(ids[:prompt]), tuple(ids[prompt : prompt + chosen]), tuple(ids[prompt + chosen :])
        )

    pairs = [pair(10, 5, 5), pair(3, 2, 2), pair(4, 3, 2)]
    batch = collate_pairs(pairs, 0, "packed")
    assert batch["pair_slots"][1].tolist()[:16] == [2] * 9 + [1] * 7  # longest first
    before, _ = scored(model, pairs, "packed", True)
    changed = list(pairs)
    prompt = tuple(t % 90 + 4 for t in pairs[2].prompt_ids)
    changed[2] = TokenizedPair(prompt, pairs[2].chosen_ids, pairs[2].rejected_ids)
    after, _ = scored(model, changed, "packed", True)
    assert not torch.equal(after.sums[2], before.sums[2])
    others = [0, 1, 3, 4]  # chosen and rejected of pairs 0 and 1
    assert torch.equal(after.sums[others], before.sums[others])


def test_shared_row_contract_by_hand():
    """[1 2 3 | 4 5 | 6 7 8] and [9 | 10 | 11 12]: positions, slots, branches, scored tokens."""
    pairs = [TokenizedPair((1, 2, 3), (4, 5), (6, 7, 8)), TokenizedPair((9,), (10,), (11, 12))]
    batch = collate_pairs(pairs, 0, "prefix_shared")
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 0, 0, 0, 0]]
    # Rejected positions continue from the prompt's end, as in a row of their own.
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5], [0, 1, 1, 2, 0, 0, 0, 0]]
    assert batch["pair_slots"].tolist() == [[0] * 8, [1] * 4 + [-1] * 4]
    assert batch["branches"].tolist() == [[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 0, 0, 0, 0]]
    # The first rejected token (6) is predicted by the prompt's last token (column 2), as
    # the first chosen token is; 7 by 6 (column 5); 11 by 9 (row 1, column 0 = flat 8).
    assert batch["score_positions"].tolist() == [2, 3, 8, 2, 5, 6, 8, 10]
    assert batch["score_labels"].tolist() == [4, 5, 10, 6, 7, 8, 11, 12]
    assert batch["score_sequences"].tolist() == [0, 0, 1, 2, 2, 2, 3, 3]
    assert batch["score_lengths"].tolist() == [2, 1, 3, 2]
    packed = collate_pairs([*pairs, TokenizedPair((5,), (6,), (7,))], 0, "packed")
    assert packed["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 5, 6, 7, 0]]
    assert packed["position_ids"][1].tolist() == [0, 1, 1, 2, 0, 1, 1, 0]
    assert packed["pair_slots"][1].tolist() == [1, 1, 1, 1, 2, 2, 2, -1]


def test_first_fit_decreasing_packing():
    assert pack_rows([5, 3, 4, 2, 1], 5) == [[0], [2, 4], [1, 3]]
    assert pack_rows([2, 2, 2], 6) == [[0, 1, 2]]


def test_response_head_never_builds_the_full_logits():
    """No new tensor of the vocabulary's width holds more rows than a chunk, fwd or bwd."""
    from torch.utils._python_dispatch import TorchDispatchMode

    vocab, chunk = 1000, 8

    class WidestVocabTensor(TorchDispatchMode):
        rows = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.is_view:  # the weight's transpose [H, V] is no new memory
                return out
            for tensor in out if isinstance(out, tuple | list) else [out]:
                if isinstance(tensor, torch.Tensor) and tensor.dim() and tensor.shape[-1] == vocab:
                    self.rows = max(self.rows, tensor.numel() // vocab)
            return out

    config_name, fields = TINY_CONFIGS["llama"]
    model = transformers.LlamaForCausalLM(
        getattr(transformers, config_name)(vocab_size=vocab, **fields)
    )
    batch = collate_pairs(random_pairs(6), 0, "packed")
    scored_tokens = batch["score_positions"].numel()
    with WidestVocabTensor() as spy:
        out = sequence_logps(model, batch, plan_for(model, batch, True, chunk))
        out.sums.sum().backward()
    assert scored_tokens > 4 * chunk
    assert spy.rows <= chunk


@pytest.mark.parametrize("layout", ["padded", "prefix_shared", "packed"])
def test_step_zero_dpo_loss_is_ln2(bare_trainer, tiny_policy, tokenizer, layout):
    from functools import partial

    from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback

    module = PreferenceModule(tiny_policy, PreferenceLoss("dpo"), partial(torch.optim.SGD, lr=0.0))
    trainer = bare_trainer([ReferenceSwapCallback()], max_steps=1)
    trainer.fit(module, datamodule=small_datamodule(tokenizer, layout=layout))
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(math.log(2), abs=1e-6)
