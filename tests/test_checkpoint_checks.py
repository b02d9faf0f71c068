"""Checkpoint problems are one-line user errors naming the file: missing, truncated, foreign."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_dpo import ReferenceSwapCallback
from lightning_dpo.checkpoint_checks import check_checkpoint_file, model_mismatch
from lightning_dpo.errors import CheckpointError
from lightning_dpo.policy import build_policy
from tests.helpers import (
    TINY_POLICY,
    dpo_module,
    flip_bytes_in_the_middle,
    make_bare_trainer,
    small_datamodule,
)


@pytest.fixture
def checkpoint(tmp_path, tiny_policy, tokenizer):
    """A checkpoint of two DPO steps of the tiny policy."""
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=2)
    trainer.fit(dpo_module(copy.deepcopy(tiny_policy)), datamodule=small_datamodule(tokenizer))
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    return path


def resume(tmp_path, policy, tokenizer, path) -> None:
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback()], max_steps=4)
    trainer.fit(dpo_module(policy), datamodule=small_datamodule(tokenizer), ckpt_path=path)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_a_complete_checkpoint_and_lightning_names_pass(checkpoint):
    check_checkpoint_file(checkpoint)
    for name in ("last", "best", "hpc", "registry"):
        check_checkpoint_file(name)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError) as error:
        check_checkpoint_file(tmp_path / "nope.ckpt")
    assert one_line(error) == f"ckpt_path={tmp_path / 'nope.ckpt'}: no such file"


def test_a_truncated_checkpoint_is_named_not_a_zip_traceback(tmp_path, checkpoint):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError) as error:
        check_checkpoint_file(cut)
    message = one_line(error)
    assert message.startswith(f"ckpt_path={cut} is not a complete PyTorch checkpoint (truncated")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"step,loss\n1,0.69\n", "is not a complete PyTorch checkpoint"),
        (None, "is a PyTorch file but not a Lightning checkpoint (no 'state_dict')"),
    ],
    ids=["text-file", "tensor-file"],
)
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, content, expected):
    path = tmp_path / "not.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        check_checkpoint_file(path)
    assert expected in one_line(error)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path, checkpoint, tokenizer):
    wider = build_policy(tokenizer, tiny={**TINY_POLICY, "intermediate_size": 96})
    with pytest.raises(CheckpointError) as error:
        resume(tmp_path, wider, tokenizer, checkpoint)
    message = one_line(error)
    assert message.startswith(f"{checkpoint} is a checkpoint of another model: its weight '")
    assert "has shape" in message and "96" in message  # the wider MLP, named


def test_model_mismatch_names_missing_unexpected_and_reshaped_weights():
    a, b = torch.zeros(2, 3), torch.zeros(3, 2)
    assert model_mismatch({"w": a}, {"w": a}) is None
    assert "lacks the weight 'v' (1 missing in all)" in model_mismatch({"w": a}, {"w": a, "v": a})
    assert "holds the weight 'v' this model has not" in model_mismatch({"w": a, "v": a}, {"w": a})
    assert "'w' has shape (2, 3), this model's (3, 2)" in model_mismatch({"w": a}, {"w": b})


def test_flipped_bytes_in_a_checkpoint_tensor_are_refused_in_one_line(
    tmp_path, checkpoint, tiny_policy, tokenizer
):
    flip_bytes_in_the_middle(checkpoint)
    with pytest.raises(CheckpointError) as error:
        check_checkpoint_file(checkpoint)  # still a readable archive: the tensors are checked
        resume(tmp_path, copy.deepcopy(tiny_policy), tokenizer, checkpoint)
    message = one_line(error)
    assert str(checkpoint) in message
    assert "does not match its fingerprint" in message or "is not a complete" in message
