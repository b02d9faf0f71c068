"""ReferenceSwapCallback inside a real Trainer: bitwise reference, restore, resume."""

from __future__ import annotations

import copy
import math
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.reference import AdapterDisabledReference, HostSnapshotReference
from tests.helpers import (
    RecordBatches,
    dpo_module,
    make_bare_trainer,
    reference_logps,
    small_datamodule,
)


def test_full_mode_reference_is_bitwise_the_initial_model(tmp_path, tiny_policy, tokenizer):
    initial = copy.deepcopy(tiny_policy)
    recorder = RecordBatches()
    reference_callback = ReferenceSwapCallback()
    make_bare_trainer(tmp_path, [reference_callback, recorder], max_steps=6).fit(
        dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer)
    )
    assert isinstance(reference_callback.weights, HostSnapshotReference)
    first, last = recorder.batches[0], recorder.batches[-1]
    for batch in (first, last):
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))
    # The policy has moved, so the equality above is not the policy's own log-probs.
    assert not torch.allclose(reference_logps(tiny_policy, last), last[REFERENCE_LOGPS_KEY])


def test_dpo_loss_at_step_zero_is_ln2(tmp_path, tiny_policy, tokenizer):
    """Before any update policy == reference, so delta = 0 and -logsigmoid(0) = ln 2."""
    recorder = RecordBatches()
    make_bare_trainer(tmp_path, [ReferenceSwapCallback(), recorder], max_steps=1).fit(
        dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer)
    )
    assert recorder.losses[0] == pytest.approx(math.log(2), abs=1e-7)


def test_step_zero_rewards_are_zero(tiny_policy, tokenizer, batch):
    module = dpo_module(tiny_policy)
    batch[REFERENCE_LOGPS_KEY] = reference_logps(copy.deepcopy(tiny_policy), batch)
    module.policy.train()
    output, _ = module.compute_loss(batch)
    assert torch.equal(output.chosen_rewards, torch.zeros_like(output.chosen_rewards))
    assert torch.equal(output.rejected_rewards, torch.zeros_like(output.rejected_rewards))
    assert torch.allclose(output.losses, torch.full_like(output.losses, math.log(2)))


def test_lora_mode_uses_the_base_model_and_no_snapshot(tmp_path, lora_policy, tokenizer):
    base = copy.deepcopy(lora_policy.get_base_model())
    recorder = RecordBatches()
    reference_callback = ReferenceSwapCallback()
    make_bare_trainer(tmp_path, [reference_callback, recorder], max_steps=4).fit(
        dpo_module(lora_policy), datamodule=small_datamodule(tokenizer)
    )
    assert isinstance(reference_callback.weights, AdapterDisabledReference)
    assert "reference_snapshot" not in reference_callback.state_dict()
    last = recorder.batches[-1]
    assert torch.equal(last[REFERENCE_LOGPS_KEY], reference_logps(base, last))


class FailInReference(Callback):
    """Makes the reference forward of step ``step`` raise."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.weights_before: dict[str, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        if trainer.global_step != self.step:
            return
        self.weights_before = {k: v.clone() for k, v in pl_module.policy.state_dict().items()}
        original = pl_module.sequence_logps

        def failing(batch):
            pl_module.sequence_logps = original
            original(batch)
            raise RuntimeError("injected failure in the reference forward")

        pl_module.sequence_logps = failing


def test_exception_in_reference_forward_restores_policy_and_checkpoint(
    tmp_path, tiny_policy, tokenizer
):
    failer = FailInReference(step=3)
    reference_callback = ReferenceSwapCallback()
    # The failer runs first so that it arms the failure before the reference forward.
    trainer = make_bare_trainer(
        tmp_path,
        [failer, reference_callback, OnExceptionCheckpoint(tmp_path)],
        max_steps=6,
        enable_checkpointing=True,
    )
    module = dpo_module(tiny_policy)
    with pytest.raises(RuntimeError, match="injected"):
        trainer.fit(module, datamodule=small_datamodule(tokenizer))
    assert not reference_callback.weights.in_flight
    after = module.policy.state_dict()
    for name, tensor in failer.weights_before.items():
        assert torch.equal(after[name], tensor), name
    saved = torch.load(tmp_path / "on_exception.ckpt", weights_only=False)["state_dict"]
    snapshot = reference_callback.weights.snapshot
    for name, tensor in failer.weights_before.items():
        assert torch.equal(saved[f"policy.{name}"], tensor), name
    moved = [n for n in snapshot if not torch.equal(snapshot[n], failer.weights_before[n])]
    assert moved, "the policy should have moved away from the reference by step 3"


def test_resume_uses_the_initial_reference(tmp_path, tiny_policy, tokenizer):
    initial = copy.deepcopy(tiny_policy)
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=4)
    trainer.fit(dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer))
    checkpoint = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(checkpoint)

    torch.manual_seed(123)  # a fresh process would build a differently initialised policy
    fresh = copy.deepcopy(initial)
    with torch.no_grad():
        for param in fresh.parameters():
            param.normal_()
    recorder = RecordBatches()
    make_bare_trainer(tmp_path, [ReferenceSwapCallback(), recorder], max_steps=6).fit(
        dpo_module(fresh), datamodule=small_datamodule(tokenizer), ckpt_path=checkpoint
    )
    assert len(recorder.batches) == 2
    for batch in recorder.batches:
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))


def test_resume_without_reference_state_fails_loudly(tmp_path, tiny_policy, tokenizer):
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=2)
    trainer.fit(dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer))
    checkpoint = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    state["callbacks"] = {}
    torch.save(state, checkpoint)
    with pytest.raises(RuntimeError, match="holds no"):
        make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=4).fit(
            dpo_module(copy.deepcopy(tiny_policy)),
            datamodule=small_datamodule(tokenizer),
            ckpt_path=checkpoint,
        )


def test_module_without_reference_callback_says_what_is_missing(tmp_path, tiny_policy, tokenizer):
    with pytest.raises(RuntimeError, match="ReferenceSwapCallback"):
        make_bare_trainer(tmp_path, [], max_steps=1).fit(
            dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer)
        )


def test_callback_refuses_a_module_without_policy(tmp_path):
    class Bare(pl.LightningModule):
        pass

    with pytest.raises(TypeError, match="policy"):
        ReferenceSwapCallback().setup(make_bare_trainer(tmp_path, []), Bare(), "fit")


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"auto.*snapshot.*adapter"):
        ReferenceSwapCallback(mode="copy")


def test_reference_free_loss_runs_no_reference_forward(tmp_path, tiny_policy, tokenizer):
    recorder = RecordBatches()
    module = PreferenceModule(
        tiny_policy,
        PreferenceLoss("dpo", beta=0.1, reference_free=True),
        partial(torch.optim.AdamW, lr=1e-2),
    )
    make_bare_trainer(tmp_path, [ReferenceSwapCallback(), recorder], max_steps=2).fit(
        module, datamodule=small_datamodule(tokenizer)
    )
    assert all(REFERENCE_LOGPS_KEY not in batch for batch in recorder.batches)
    assert all(math.isfinite(loss) for loss in recorder.losses)
