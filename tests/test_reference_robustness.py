"""The reference survives: existing adapters, bf16 snapshots, bad checkpoints, NaNs."""

from __future__ import annotations

import copy
import math
from functools import partial

import lightning.pytorch as pl
import pytest
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.policy import build_policy, has_trained_adapter
from lightning_dpo.reference import (
    AdapterDisabledReference,
    HostSnapshotReference,
    SnapshotPlacement,
)
from lightning_dpo.reference.strategies import check_supported_strategy
from tests.helpers import (
    TINY_POLICY,
    RecordBatches,
    dpo_module,
    make_bare_trainer,
    reference_logps,
    small_datamodule,
)


def _saved_trained_adapter(tokenizer, tmp_path):
    """A LoRA adapter with non-zero weights saved to disk, on a seed-0 tiny base."""
    torch.manual_seed(0)
    policy = build_policy(tokenizer, tiny=TINY_POLICY, lora={"r": 4, "lora_alpha": 8})
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    policy.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_lora_from_existing_adapter_reference_is_base_plus_that_adapter(tmp_path, tokenizer):
    adapter_dir = _saved_trained_adapter(tokenizer, tmp_path)
    torch.manual_seed(0)
    policy = build_policy(tokenizer, tiny=TINY_POLICY, adapter=str(adapter_dir))
    assert has_trained_adapter(policy)
    initial = copy.deepcopy(policy)
    torch.manual_seed(0)
    bare_base = build_policy(tokenizer, tiny=TINY_POLICY)

    recorder, callback = RecordBatches(), ReferenceSwapCallback()
    make_bare_trainer(tmp_path, [callback, recorder], max_steps=4).fit(
        dpo_module(policy), datamodule=small_datamodule(tokenizer)
    )
    assert isinstance(callback.weights, HostSnapshotReference)
    assert all("lora_" in name for name in callback.weights.snapshot)  # adapter only: small
    base_bytes = sum(p.numel() * p.element_size() for p in bare_base.parameters())
    assert callback.weights.nbytes < base_bytes / 4
    last = recorder.batches[-1]
    assert torch.equal(last[REFERENCE_LOGPS_KEY], reference_logps(initial, last))
    assert not torch.allclose(last[REFERENCE_LOGPS_KEY], reference_logps(bare_base, last))


def test_bare_base_can_be_chosen_explicitly_for_an_existing_adapter(tmp_path, tokenizer):
    adapter_dir = _saved_trained_adapter(tokenizer, tmp_path)
    torch.manual_seed(0)
    policy = build_policy(tokenizer, tiny=TINY_POLICY, adapter=str(adapter_dir))
    torch.manual_seed(0)
    bare_base = build_policy(tokenizer, tiny=TINY_POLICY)
    recorder, callback = RecordBatches(), ReferenceSwapCallback(mode="disable_adapters")
    make_bare_trainer(tmp_path, [callback, recorder], max_steps=2).fit(
        dpo_module(policy), datamodule=small_datamodule(tokenizer)
    )
    assert isinstance(callback.weights, AdapterDisabledReference)
    batch = recorder.batches[-1]
    assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(bare_base, batch))


def test_lora_and_adapter_together_are_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"model.lora.*model.adapter"):
        build_policy(tokenizer, lora={"r": 2}, adapter=str(tmp_path))


@pytest.mark.parametrize("swap_mode", ["copy", "exchange"])
def test_both_swap_modes_give_bitwise_the_same_reference(tmp_path, tokenizer, swap_mode):
    torch.manual_seed(0)
    policy = build_policy(tokenizer, tiny=TINY_POLICY)
    initial = copy.deepcopy(policy)
    recorder = RecordBatches()
    make_bare_trainer(
        tmp_path, [ReferenceSwapCallback(swap_mode=swap_mode), recorder], max_steps=4
    ).fit(dpo_module(policy), datamodule=small_datamodule(tokenizer))
    for batch in recorder.batches:
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))


def test_bf16_snapshot_halves_host_memory_and_stays_close(tiny_policy, batch):
    exact = HostSnapshotReference.capture(tiny_policy)
    half = HostSnapshotReference.capture(
        tiny_policy, SnapshotPlacement.decide(tiny_policy, dtype=torch.bfloat16)
    )
    assert half.nbytes * 2 == exact.nbytes
    with torch.no_grad():
        for param in tiny_policy.parameters():
            param.add_(0.1)
    with half.reference(tiny_policy), torch.no_grad():
        rounded = reference_logps(tiny_policy, batch)
    expected = reference_logps(copy.deepcopy(tiny_policy), batch)
    with exact.reference(tiny_policy):
        expected = reference_logps(tiny_policy, batch)
    assert not torch.equal(rounded, expected)  # bf16 rounds the weights...
    assert torch.allclose(rounded, expected, rtol=2e-2)  # ...by little


def test_checkpoint_state_is_refused_when_it_does_not_fit_the_model(tmp_path, tokenizer):
    torch.manual_seed(0)
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=2)
    trainer.fit(
        dpo_module(build_policy(tokenizer, tiny=TINY_POLICY)),
        datamodule=small_datamodule(tokenizer),
    )
    checkpoint = tmp_path / "small.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    (key,) = [k for k in state["callbacks"] if "ReferenceSwapCallback" in k]

    corrupt = copy.deepcopy(state)
    tensor = next(iter(corrupt["callbacks"][key]["reference_snapshot"].values()))
    tensor.view(-1)[0] += 1.0
    torch.save(corrupt, tmp_path / "corrupt.ckpt")
    with pytest.raises(RuntimeError, match="fingerprint"):
        make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=3).fit(
            dpo_module(build_policy(tokenizer, tiny=TINY_POLICY)),
            datamodule=small_datamodule(tokenizer),
            ckpt_path=tmp_path / "corrupt.ckpt",
        )


def test_unsupported_strategy_is_refused_by_name():
    with pytest.raises(NotImplementedError, match=r"FSDPStrategy.*ModelParallelStrategy"):
        check_supported_strategy(pl.strategies.FSDPStrategy())


def test_bf16_mixed_step_zero_dpo_loss_is_ln2(tmp_path, tiny_policy, tokenizer):
    """The reference forward runs in the precision plugin's autocast, like the policy's."""
    recorder = RecordBatches()
    make_bare_trainer(
        tmp_path, [ReferenceSwapCallback(), recorder], max_steps=2, precision="bf16-mixed"
    ).fit(dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer))
    assert recorder.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert math.isfinite(recorder.losses[1])


def test_non_finite_loss_stops_with_step_and_last_finite_values(tmp_path, tiny_policy, tokenizer):
    class PoisonAtStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.policy.lm_head.weight.fill_(float("nan"))

    module = PreferenceModule(
        tiny_policy, PreferenceLoss("dpo", beta=0.1), partial(torch.optim.AdamW, lr=1e-2)
    )
    callbacks = [ReferenceSwapCallback(), PoisonAtStep()]
    with pytest.raises(FloatingPointError) as error:
        make_bare_trainer(tmp_path, callbacks, max_steps=6).fit(
            module, datamodule=small_datamodule(tokenizer)
        )
    message = str(error.value)
    assert "step 3" in message
    assert "last finite loss" in message and "step 2" in message
