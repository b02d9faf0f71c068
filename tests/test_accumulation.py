"""Gradient accumulation: one reference swap per optimizer step, bitwise the same reference."""

from __future__ import annotations

import copy
import logging
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler

from lightning_dpo import ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY, STEP_PAIRS_KEY, WINDOW_KEY
from lightning_dpo.data import collate_pairs
from lightning_dpo.data.batches.plan import BatchPlan
from lightning_dpo.data.batches.windows import PlannedDataLoader, WindowedDataLoader, WindowSlot
from lightning_dpo.training import build
from tests.helpers import (
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    RecordBatches,
    compose_train_config,
    dpo_module,
    make_bare_trainer,
    reference_logps,
    small_datamodule,
)


class RecordReference(RecordBatches):
    """:class:`RecordBatches` that also checks the window slot was consumed before the module."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        assert WINDOW_KEY not in batch, "the reference callback must consume the window slot"
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def _pairs(tokenizer, count):
    datamodule = small_datamodule(tokenizer)
    datamodule.setup()
    return datamodule.train_pairs[:count]


@pytest.mark.parametrize(
    ("count", "micro", "window"), [(64, 8, 3), (10, 3, 4), (7, 8, 2), (9, 3, 3)]
)
def test_windowed_loader_yields_exactly_the_plain_batches(tokenizer, count, micro, window):
    pairs = _pairs(tokenizer, count)
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    plain = list(DataLoader(pairs, batch_size=micro, collate_fn=collate))
    loader = WindowedDataLoader(pairs, micro, window, collate_fn=collate)
    windowed = list(loader)
    assert len(loader) == len(windowed) == len(plain)
    slots = [batch.pop(WINDOW_KEY) for batch in windowed]
    for index, (slot, ours, theirs) in enumerate(zip(slots, windowed, plain, strict=True)):
        assert isinstance(slot, WindowSlot)
        assert slot.position == index % window
        assert slot.window is slots[index - slot.position].window
        assert STEP_PAIRS_KEY not in ours  # a collation window: not known to be the step
        assert ours.keys() == theirs.keys()
        for key in theirs:  # each micro-batch padded to its own longest row, as plain
            assert torch.equal(ours[key], theirs[key]), key


def test_windowed_loader_refuses_what_it_cannot_honour(tokenizer):
    pairs = _pairs(tokenizer, 4)
    with pytest.raises(ValueError, match="window must be >= 1"):
        WindowedDataLoader(pairs, 2, 0, collate_fn=list)
    with pytest.raises(ValueError, match="drop_last must be False"):
        WindowedDataLoader(pairs, 2, 2, collate_fn=list, drop_last=True)
    # what Lightning does under DDP unless Trainer(use_distributed_sampler=False)
    plan = BatchPlan([1] * len(pairs), batch_size=2)
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        PlannedDataLoader(pairs, plan, list, sampler=DistributedSampler(pairs, 2, 0))


def _fit(tmp_path, policy, tokenizer, accumulate, windows, max_steps=4, **callback_kwargs):
    """Fit a copy of ``policy``; return the callback, the recorded batches and the model."""
    module = dpo_module(copy.deepcopy(policy))
    reference, record = ReferenceSwapCallback(**callback_kwargs), RecordReference()
    trainer = make_bare_trainer(
        tmp_path, [reference, record], max_steps=max_steps, accumulate_grad_batches=accumulate
    )
    datamodule = small_datamodule(tokenizer, step_windows=windows)
    trainer.fit(module, datamodule=datamodule)
    return reference, record.batches, module.policy


def test_one_swap_per_optimizer_step_with_bitwise_the_same_reference(
    brackets, tmp_path, tiny_policy, tokenizer
):
    """Accumulating 3 micro-batches per step gives one bracket per step, same reference.

    64 pairs in micro-batches of 8: steps of 3, 3 and 2 micro-batches per epoch (the
    epoch's last window is short); 4 steps end inside the second epoch.
    """
    windowed, batches, trained = _fit(tmp_path / "w", tiny_policy, tokenizer, 3, windows=True)
    per_batch, plain_batches, plain_trained = _fit(
        tmp_path / "p", tiny_policy, tokenizer, 3, windows=False
    )
    assert len(batches) == len(plain_batches) == 3 + 3 + 2 + 3
    assert brackets.of(windowed) == 4
    assert brackets.of(per_batch) == 11
    for ours, theirs in zip(batches, plain_batches, strict=True):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), key
        assert torch.equal(ours[REFERENCE_LOGPS_KEY], reference_logps(tiny_policy, ours))
    for (name, ours), theirs in zip(
        trained.named_parameters(), plain_trained.parameters(), strict=True
    ):
        assert torch.equal(ours, theirs), name
    assert not torch.equal(next(trained.parameters()), next(tiny_policy.parameters())), (
        "the policy must have trained"
    )


def test_tr_dpo_reference_updates_between_windows(brackets, tmp_path, tiny_policy, tokenizer):
    """TR-DPO syncs after every optimizer step, i.e. between windows.

    Every micro-batch still sees the reference of its step, bitwise as with one swap per
    micro-batch.
    """
    options = {"sync_every": 1, "sync_alpha": 0.5}
    windowed, batches, _ = _fit(tmp_path / "w", tiny_policy, tokenizer, 2, True, **options)
    per_batch, plain_batches, _ = _fit(tmp_path / "p", tiny_policy, tokenizer, 2, False, **options)
    assert (brackets.of(windowed), brackets.of(per_batch)) == (4, 8)
    references = [b[REFERENCE_LOGPS_KEY] for b in batches]
    assert all(
        torch.equal(ours, b[REFERENCE_LOGPS_KEY])
        for ours, b in zip(references, plain_batches, strict=True)
    )
    # The reference moved between steps: step 1's micro-batches are scored by another one.
    assert not torch.equal(references[2], reference_logps(tiny_policy, batches[2]))


def test_windows_that_straddle_a_reference_update_are_recomputed(
    brackets, tmp_path, tiny_policy, tokenizer
):
    """A reference update inside a window: its later micro-batches are rescored.

    A user's WindowedDataLoader whose windows (2) do not match the accumulation (3): a
    TR-DPO update can fall inside a window, and its later micro-batches must then be scored
    by the updated reference (recomputed), not by the one cached before the update.
    """
    datamodule = small_datamodule(tokenizer)
    datamodule.setup()
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    runs = {}
    for name, window in (("windowed", 2), ("plain", 1)):
        module = dpo_module(copy.deepcopy(tiny_policy))
        reference, record = ReferenceSwapCallback(sync_every=1), RecordReference()
        trainer = make_bare_trainer(
            tmp_path / name, [reference, record], max_steps=3, accumulate_grad_batches=3
        )
        loader = WindowedDataLoader(datamodule.train_pairs, 8, window, collate_fn=collate)
        trainer.fit(module, train_dataloaders=loader)
        runs[name] = (reference, record.batches)
    (windowed, batches), (plain, plain_batches) = runs["windowed"], runs["plain"]
    # Windows [0,1] [2,3] [4,5] [6,7]; steps (and updates) after micro-batches 2, 5 and 7.
    # Brackets at 0, 2, 3 (its window was scored before step 1's update), 4 and 6.
    assert brackets.of(windowed) == 5
    assert brackets.of(plain) == 8
    for ours, theirs in zip(batches, plain_batches, strict=True):
        assert torch.equal(ours[REFERENCE_LOGPS_KEY], theirs[REFERENCE_LOGPS_KEY])


@pytest.mark.slow
def test_windows_cross_worker_processes(brackets, tmp_path, tiny_policy, tokenizer):
    """With a (persistent) worker process the windows are collated there and pickled whole.

    8 micro-batches per epoch, 2 per step: 6 steps run into a second epoch of the worker.
    """
    module = dpo_module(copy.deepcopy(tiny_policy))
    reference, record = ReferenceSwapCallback(), RecordReference()
    trainer = make_bare_trainer(
        tmp_path, [reference, record], max_steps=6, accumulate_grad_batches=2
    )
    trainer.fit(module, datamodule=small_datamodule(tokenizer, num_workers=1))
    assert brackets.of(reference) == 6
    assert len(record.batches) == 12
    for batch in record.batches:
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(tiny_policy, batch))


def test_unwindowed_accumulation_says_how_to_swap_once_per_step(
    brackets, tmp_path, tiny_policy, tokenizer, caplog
):
    reference = ReferenceSwapCallback()
    trainer = make_bare_trainer(tmp_path, [reference], max_steps=1, accumulate_grad_batches=2)
    datamodule = small_datamodule(tokenizer, step_windows=False)
    with caplog.at_level(logging.INFO):
        trainer.fit(dpo_module(tiny_policy), datamodule=datamodule)
    assert brackets.of(reference) == 2
    assert caplog.text.count("one reference swap per micro-batch") == 1


def test_lora_and_cache_references_accept_windows(brackets, tmp_path, lora_policy, tokenizer):
    """The adapter-disabled reference brackets once per step too; the cache needs none."""
    lora, batches, _ = _fit(tmp_path / "lora", lora_policy, tokenizer, 2, True, max_steps=2)
    assert brackets.of(lora) == 2
    for batch in batches:
        with lora_policy.disable_adapter():
            expected = reference_logps(lora_policy, batch)
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], expected)
    cache_dir = tmp_path / "cache"
    cached, batches, _ = _fit(
        tmp_path / "c", lora_policy, tokenizer, 2, True, max_steps=2, logps_cache_dir=str(cache_dir)
    )
    assert brackets.of(cached) == 0
    assert len(batches) == 4


def test_config_accumulation_swaps_once_per_optimizer_step(brackets, tmp_path):
    """``python train.py trainer.accumulate_grad_batches=2``: windows with no other change."""
    overrides = ["trainer.accumulate_grad_batches=2", *FAST_OVERRIDES, *LEAN_OVERRIDES]
    datamodule, module, trainer = build(compose_train_config(tmp_path, overrides))
    trainer.fit(module, datamodule=datamodule)
    reference = next(c for c in trainer.callbacks if isinstance(c, ReferenceSwapCallback))
    assert isinstance(trainer.train_dataloader, PlannedDataLoader)
    assert trainer.train_dataloader.plan.window == 2
    assert trainer.global_step == 4
    # 8 micro-batches; val_check_interval=2 counts optimizer steps (train.py passes 4
    # batches to Lightning): 2 validations of 2 batches, one bracket each.
    assert trainer.num_val_batches[0] == 2
    assert brackets.of(reference) == 4 + 2 * 2


class GrabSlots(Callback):
    """Keeps the window slots the batches arrive with (placed before the reference)."""

    def __init__(self) -> None:
        self.slots: list[WindowSlot] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.slots.append(batch[WINDOW_KEY])


@pytest.mark.parametrize("cache", [False, True])
def test_consumed_windows_hold_no_batches_or_log_probs(tmp_path, tiny_policy, tokenizer, cache):
    """Each window lets go of every micro-batch and log-prob it handed out."""
    grab = GrabSlots()
    reference = ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "cache") if cache else None)
    trainer = make_bare_trainer(tmp_path, [grab, reference], max_steps=3, accumulate_grad_batches=3)
    trainer.fit(dpo_module(copy.deepcopy(tiny_policy)), datamodule=small_datamodule(tokenizer))
    assert len(grab.slots) == 8
    windows = {id(slot.window): slot.window for slot in grab.slots}.values()
    assert len(windows) == 3
    for window in windows:
        assert window.batches == [None] * len(window.batches)
        assert window.holds_nothing
    if not cache:  # the swap source let go of every log-prob it computed ahead
        assert reference.source.holding == 0


def test_resume_under_accumulation_keeps_the_reference_and_one_swap_per_step(
    brackets, tmp_path, tiny_policy, tokenizer
):
    """Checkpoint after 2 steps of 3 micro-batches, resume 2 more from a scrambled policy."""
    trainer = make_bare_trainer(
        tmp_path, [ReferenceSwapCallback()], max_steps=2, accumulate_grad_batches=3
    )
    trainer.fit(dpo_module(copy.deepcopy(tiny_policy)), datamodule=small_datamodule(tokenizer))
    checkpoint = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(checkpoint)

    fresh = copy.deepcopy(tiny_policy)
    with torch.no_grad():
        for param in fresh.parameters():
            param.normal_()
    reference, record = ReferenceSwapCallback(), RecordReference()
    resumed = make_bare_trainer(
        tmp_path, [reference, record], max_steps=4, accumulate_grad_batches=3
    )
    resumed.fit(dpo_module(fresh), datamodule=small_datamodule(tokenizer), ckpt_path=checkpoint)
    assert resumed.global_step == 4
    assert brackets.of(reference) == 2
    assert len(record.batches) == 2 + 3  # the rest of epoch 1 (2 micro-batches), one full step
    for batch in record.batches:
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(tiny_policy, batch))
