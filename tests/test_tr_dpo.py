"""TR-DPO: periodic hard or soft updates of the reference, full and LoRA."""

from __future__ import annotations

import copy
import logging

import lightning.pytorch as pl
import pytest
import torch

from lightning_dpo import ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.reference import HostSnapshotReference
from tests.helpers import (
    RecordBatches,
    dpo_module,
    make_bare_trainer,
    reference_logps,
    small_datamodule,
)


class KeepPolicyAt(pl.Callback):
    """Deep-copies the policy (and the reference snapshot) at the start of each step."""

    def __init__(self) -> None:
        self.policies: dict[int, torch.nn.Module] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.policies[trainer.global_step] = copy.deepcopy(pl_module.policy)


def test_hard_sync_makes_the_reference_the_policy_of_that_step(tmp_path, tiny_policy, tokenizer):
    initial = copy.deepcopy(tiny_policy)
    keeper, recorder = KeepPolicyAt(), RecordBatches()
    callbacks = [keeper, ReferenceSwapCallback(sync_every=2), recorder]
    make_bare_trainer(tmp_path, callbacks, max_steps=5).fit(
        dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer)
    )
    batches = recorder.batches
    for step in (0, 1):
        assert torch.equal(
            batches[step][REFERENCE_LOGPS_KEY], reference_logps(initial, batches[step])
        )
    for step in (2, 3):  # synced after the 2nd optimizer step
        expected = reference_logps(keeper.policies[2], batches[step])
        assert torch.equal(batches[step][REFERENCE_LOGPS_KEY], expected)
    expected = reference_logps(keeper.policies[4], batches[4])  # and again after the 4th
    assert torch.equal(batches[4][REFERENCE_LOGPS_KEY], expected)


def test_soft_sync_mixes_reference_and_policy(tmp_path, tiny_policy, tokenizer, caplog):
    initial = {k: v.clone() for k, v in tiny_policy.state_dict().items()}
    keeper, reference = KeepPolicyAt(), ReferenceSwapCallback(sync_every=2, sync_alpha=0.25)
    with caplog.at_level(logging.INFO):
        make_bare_trainer(tmp_path, [keeper, reference], max_steps=3).fit(
            dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer)
        )
    assert "TR-DPO: every 2 optimizer steps the reference moves towards the policy" in caplog.text
    assert "ref <- 0.75 ref + 0.25 policy" in caplog.text
    assert caplog.text.count("TR-DPO: reference updated after step") == 1  # step 2 of 3
    at_sync = keeper.policies[2].state_dict()
    for name, ref in reference.weights.snapshot.items():
        torch.testing.assert_close(ref, 0.75 * initial[name] + 0.25 * at_sync[name])


def test_lora_tr_dpo_keeps_a_frozen_adapter_copy_starting_at_the_base(
    tmp_path, lora_policy, tokenizer
):
    base = copy.deepcopy(lora_policy.get_base_model())
    recorder, reference = RecordBatches(), ReferenceSwapCallback(sync_every=2)
    make_bare_trainer(tmp_path, [reference, recorder], max_steps=3).fit(
        dpo_module(lora_policy), datamodule=small_datamodule(tokenizer)
    )
    assert isinstance(reference.weights, HostSnapshotReference)
    assert all("lora_" in name for name in reference.weights.snapshot)
    first = recorder.batches[0]
    assert torch.equal(first[REFERENCE_LOGPS_KEY], reference_logps(base, first))
    later = recorder.batches[2]
    assert not torch.equal(later[REFERENCE_LOGPS_KEY], reference_logps(base, later))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sync_every": 2, "mode": "disable_adapters"}, "bare base model"),
        ({"sync_every": 0}, "sync_every must be a positive integer"),
        ({"sync_every": 2, "sync_alpha": 0.0}, r"sync_alpha must be in \(0, 1\]"),
        ({"swap_mode": "swap"}, r"swap_mode must be one of \('auto', 'copy', 'exchange'\)"),
    ],
)
def test_tr_dpo_settings_that_cannot_apply_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReferenceSwapCallback(**kwargs)
