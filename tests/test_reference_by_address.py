"""The reference by address: checkpoints name the pretrained source instead of its weights."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from lightning_dpo import ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.errors import CheckpointError
from lightning_dpo.policy import build_policy
from lightning_dpo.reference.weights.by_address import KIND
from tests.helpers import (
    RecordBatches,
    dpo_module,
    make_bare_trainer,
    reference_logps,
    small_datamodule,
)


@pytest.fixture
def pretrained(tmp_path, tiny_policy):
    """The tiny policy saved with ``save_pretrained``: the run's "pretrained" source."""
    path = tmp_path / "pretrained"
    tiny_policy.save_pretrained(path)
    return path


def fit(tmp_path, policy, tokenizer, steps, *callbacks, ckpt_path=None, **reference):
    callback = ReferenceSwapCallback(**reference)
    trainer = make_bare_trainer(tmp_path, [callback, *callbacks], max_steps=steps)
    datamodule = small_datamodule(tokenizer)
    trainer.fit(dpo_module(policy), datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, callback


def saved(tmp_path, trainer, name):
    path = tmp_path / name
    trainer.save_checkpoint(path)
    return path


def reference_state(path) -> dict:
    checkpoint = torch.load(path, weights_only=False)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "ReferenceSwapCallback" in k]
    return state


def test_checkpoint_names_the_source_is_smaller_and_resumes_to_the_same_reference(
    tmp_path, pretrained, tokenizer
):
    initial = build_policy(tokenizer, pretrained=str(pretrained))
    source = str(pretrained)
    trainer, _ = fit(tmp_path, copy.deepcopy(initial), tokenizer, 2, pretrained=source)
    by_address = saved(tmp_path, trainer, "address.ckpt")
    trainer, _ = fit(
        tmp_path, copy.deepcopy(initial), tokenizer, 2, pretrained=source, embed_snapshot=True
    )
    embedded = saved(tmp_path, trainer, "embedded.ckpt")
    state = reference_state(by_address)
    assert state["reference"] == KIND and state["source"] == source
    assert "reference_snapshot" not in state
    assert reference_state(embedded)["reference"] == "snapshot"
    # weights, AdamW's two moments and (embedded) the snapshot: about a quarter less
    assert by_address.stat().st_size < 0.8 * embedded.stat().st_size

    recorder = RecordBatches()
    fresh = build_policy(tokenizer, pretrained=str(pretrained))
    with torch.no_grad():  # the resumed weights come from the checkpoint, never from here
        for param in fresh.parameters():
            param.normal_()
    trainer, _ = fit(
        tmp_path, fresh, tokenizer, 4, recorder, ckpt_path=by_address, pretrained=source
    )
    assert len(recorder.batches) == 2
    for batch in recorder.batches:  # bitwise the initial model's reference log-probs
        assert torch.equal(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))
    assert reference_state(saved(tmp_path, trainer, "again.ckpt"))["reference"] == KIND
    trainer, _ = fit(
        tmp_path, copy.deepcopy(initial), tokenizer, 4, ckpt_path=by_address, embed_snapshot=True
    )  # resumed with the snapshot to be embedded from now on
    assert reference_state(saved(tmp_path, trainer, "embedded_now.ckpt"))["reference"] == "snapshot"


def test_a_source_that_changed_or_moved_is_refused_in_one_line(
    tmp_path, pretrained, tokenizer, tiny_policy
):
    initial = build_policy(tokenizer, pretrained=str(pretrained))
    trainer, _ = fit(tmp_path, copy.deepcopy(initial), tokenizer, 2, pretrained=str(pretrained))
    checkpoint = saved(tmp_path, trainer, "address.ckpt")
    changed = copy.deepcopy(tiny_policy)
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1e-3
    changed.save_pretrained(pretrained)  # the file changed under the checkpoint
    with pytest.raises(CheckpointError, match="whose weights are no longer the run's reference"):
        fit(tmp_path, copy.deepcopy(initial), tokenizer, 4, ckpt_path=checkpoint)
    shutil.rmtree(pretrained)  # or moved away
    with pytest.raises(CheckpointError, match=r"which is gone: point callbacks\.reference"):
        fit(tmp_path, copy.deepcopy(initial), tokenizer, 4, ckpt_path=checkpoint)


def test_the_snapshot_stays_embedded_when_it_is_not_the_unchanged_source(
    tmp_path, pretrained, tokenizer
):
    policy = build_policy(tokenizer, pretrained=str(pretrained))
    trainer, _ = fit(
        tmp_path, copy.deepcopy(policy), tokenizer, 2, pretrained=str(pretrained), sync_every=1
    )
    assert reference_state(saved(tmp_path, trainer, "tr_dpo.ckpt"))["reference"] == "snapshot"
    with torch.no_grad():  # changed after loading: the source is not the reference
        policy.lm_head.weight[0, 0] += 1e-3
    trainer, _ = fit(tmp_path, policy, tokenizer, 2, pretrained=str(pretrained))
    assert reference_state(saved(tmp_path, trainer, "changed.ckpt"))["reference"] == "snapshot"
    trainer, _ = fit(tmp_path, copy.deepcopy(policy), tokenizer, 2)  # no source named
    assert reference_state(saved(tmp_path, trainer, "plain.ckpt"))["reference"] == "snapshot"
