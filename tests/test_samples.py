"""GreedySamplesCallback: the reference's and the policy's greedy completions, as text."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.callbacks.samples import (
    GreedySamplesCallback,
    greedy_completions,
    markdown_table,
)
from lightning_dpo.wiring import Wiring
from tests.helpers import make_bare_trainer, small_datamodule


def fit_with_samples(tmp_path, policy, callbacks, steps=4):
    datamodule = small_datamodule()
    module = PreferenceModule(
        policy, PreferenceLoss("dpo", beta=0.1, sft_weight=1.0), partial(torch.optim.AdamW, lr=3e-2)
    )
    reference = ReferenceSwapCallback()
    for callback in callbacks:
        callback.connect(Wiring(datamodule=datamodule, reference=reference))
    trainer = make_bare_trainer(
        tmp_path,
        [reference, *callbacks],
        max_steps=steps,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer, datamodule


def expected_section(datamodule, model, step, source, count=2, max_new_tokens=6):
    tokenizer = datamodule.tokenizer
    pairs = datamodule.val_pairs[:count]
    texts = greedy_completions(model, tokenizer, [p.prompt_ids for p in pairs], max_new_tokens)
    decode = partial(tokenizer.decode, skip_special_tokens=True)
    rows = [
        (decode(p.prompt_ids), decode(p.chosen_ids), t) for p, t in zip(pairs, texts, strict=True)
    ]
    return f"## step {step}: {source}\n\n{markdown_table(rows)}\n\n"


@pytest.mark.parametrize("policy_fixture", ["tiny_policy", "lora_policy"])
def test_reference_once_then_policy_at_each_validation(tmp_path, policy_fixture, request):
    policy = request.getfixturevalue(policy_fixture)
    initial = copy.deepcopy(policy)
    samples = GreedySamplesCallback(tmp_path, num_prompts=2, max_new_tokens=6)
    _, datamodule = fit_with_samples(tmp_path, policy, [samples])
    text = samples.path.read_text()
    headers = [line for line in text.splitlines() if line.startswith("## ")]
    assert headers == ["## step 2: reference", "## step 2: policy", "## step 4: policy"]
    # The reference section is what the untrained model generates ...
    assert text.startswith(expected_section(datamodule, initial, 2, "reference"))
    # ... and the last policy section what the trained policy generates.
    assert text.endswith(expected_section(datamodule, policy, 4, "policy"))


def test_samples_leave_the_training_weights_untouched(tmp_path, tiny_policy):
    trainer, datamodule = fit_with_samples(tmp_path, tiny_policy, [], steps=2)
    before = {name: p.detach().clone() for name, p in tiny_policy.named_parameters()}
    reference = next(c for c in trainer.callbacks if isinstance(c, ReferenceSwapCallback))
    callback = GreedySamplesCallback(
        tmp_path / "again", 2, max_new_tokens=4, datamodule=datamodule, reference=reference
    )
    callback.on_validation_epoch_end(trainer, trainer.lightning_module)  # reference + policy
    assert "reference" in callback.path.read_text()
    for name, param in tiny_policy.named_parameters():
        assert torch.equal(param, before[name]), name


def test_markdown_table_escapes_pipes_and_marks_empty_cells():
    table = markdown_table([("a|b", "x\ny", "")])
    assert table.splitlines()[2] == "| `a\\|b` | `x\\ny` | (empty) |"


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_prompts and max_new_tokens must be >= 1"):
        GreedySamplesCallback(tmp_path, num_prompts=0)
