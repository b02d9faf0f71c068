"""HFExportCallback: the export reloads with transformers/peft and reproduces the policy."""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.callbacks.export import BASE_MODEL_SUBDIR, HFExportCallback
from lightning_dpo.reference import HostSnapshotReference, reference_context
from lightning_dpo.scoring import sequence_logps
from tests.helpers import make_bare_trainer, plan_for, small_datamodule


def fit_with_export(tmp_path, policy, merge_lora=False, steps=4):
    """Train ``policy`` a few steps on the small sort task with HFExportCallback."""
    datamodule = small_datamodule()
    module = PreferenceModule(
        policy, PreferenceLoss("dpo", beta=0.1), partial(torch.optim.AdamW, lr=1e-2)
    )
    export_dir = tmp_path / "hf_export"
    reference = ReferenceSwapCallback()
    export = HFExportCallback(
        export_dir, merge_lora=merge_lora, tokenizer=datamodule.tokenizer, reference=reference
    )
    trainer = make_bare_trainer(tmp_path, [reference, export], max_steps=steps)
    trainer.fit(module, datamodule=datamodule)
    return datamodule, export_dir


def logps(model, batch):
    with torch.no_grad():
        return sequence_logps(model.eval(), batch, plan_for(model, batch)).sums


def val_batch(datamodule):
    return next(iter(datamodule.val_dataloader()))


def test_full_model_export_reproduces_the_trained_policy(tmp_path, tiny_policy):
    initial = copy.deepcopy(tiny_policy)
    datamodule, export_dir = fit_with_export(tmp_path, tiny_policy)
    batch = val_batch(datamodule)
    reloaded = AutoModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
    expected = logps(tiny_policy, batch)
    torch.testing.assert_close(logps(reloaded, batch), expected, rtol=0, atol=1e-6)
    # The export holds the trained weights, not the initial (reference) ones.
    assert not torch.allclose(logps(initial, batch), expected, atol=1e-3)


def test_tokenizer_is_exported_and_encodes_the_same(tmp_path, tiny_policy):
    datamodule, export_dir = fit_with_export(tmp_path, tiny_policy, steps=1)
    reloaded = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
    for text in ("31415>11345", "hello, world"):
        assert reloaded(text)["input_ids"] == datamodule.tokenizer(text)["input_ids"]
    assert reloaded.eos_token_id == datamodule.tokenizer.eos_token_id


def test_lora_adapter_export_reloads_with_peft(tmp_path, lora_policy):
    datamodule, export_dir = fit_with_export(tmp_path, lora_policy)
    assert (export_dir / "adapter_config.json").is_file()
    assert (export_dir / BASE_MODEL_SUBDIR / "config.json").is_file()  # random base saved too
    assert not (export_dir / "model.safetensors").exists()
    batch = val_batch(datamodule)
    reloaded = AutoPeftModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
    torch.testing.assert_close(logps(reloaded, batch), logps(lora_policy, batch), rtol=0, atol=1e-6)
    # The base model alone is the reference (adapters disabled), and differs from the policy.
    with reloaded.disable_adapter():
        base = logps(reloaded, batch)
    with lora_policy.disable_adapter():
        torch.testing.assert_close(base, logps(lora_policy, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(base, logps(lora_policy, batch), atol=1e-3)


def test_merged_lora_export_is_a_plain_model_and_leaves_the_policy_unmerged(tmp_path, lora_policy):
    datamodule, export_dir = fit_with_export(tmp_path, lora_policy, merge_lora=True)
    assert not (export_dir / "adapter_config.json").exists()
    batch = val_batch(datamodule)
    reloaded = AutoModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    torch.testing.assert_close(logps(reloaded, batch), logps(lora_policy, batch), atol=1e-4, rtol=0)
    assert any("lora_A" in name for name, _ in lora_policy.named_parameters())


def test_export_refuses_while_reference_weights_are_swapped_in(tmp_path, tiny_policy):
    weights = HostSnapshotReference.capture(tiny_policy)
    reference_callback = SimpleNamespace(weights=weights)
    module = SimpleNamespace(policy=tiny_policy)
    export = HFExportCallback(tmp_path / "export", reference=reference_callback)
    with (
        reference_context(weights, tiny_policy),
        pytest.raises(RuntimeError, match="reference weights are swapped"),
    ):
        export.on_fit_end(SimpleNamespace(), module)
    assert not (tmp_path / "export").exists()
