"""Checkpoint integrity: weights and optimizer state are fingerprinted and verified on load."""

from __future__ import annotations

import random

import pytest
import torch

from lightning_dpo.integrity import (
    CHECKPOINT_KEY,
    named_tensors,
    stamp_checkpoint,
    tensors_fingerprint,
    verify_checkpoint,
)
from lightning_dpo.training import train
from tests.helpers import FAST_OVERRIDES, LEAN_OVERRIDES, compose_train_config


def test_named_tensors_walks_nested_containers():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    tree = {"state_dict": {"w": a}, "optimizer_states": [{"state": {0: {"exp_avg": b}}}], "x": c}
    assert named_tensors(tree) == {
        "state_dict.w": a,
        "optimizer_states.0.state.0.exp_avg": b,
        "x": c,
    }


def test_fingerprint_sees_name_shape_dtype_and_every_byte():
    base = {"w": torch.arange(6, dtype=torch.float32)}
    fingerprint = tensors_fingerprint(base)
    assert fingerprint.startswith("xxh3_128:")
    assert tensors_fingerprint({"w": torch.arange(6, dtype=torch.float32)}) == fingerprint
    changed = base["w"].clone()
    changed[3] = torch.nextafter(changed[3], torch.tensor(10.0))  # one ulp
    variants = [
        {"v": base["w"]},
        {"w": base["w"].reshape(2, 3)},
        {"w": base["w"].double()},
        {"w": changed},
    ]
    assert all(tensors_fingerprint(v) != fingerprint for v in variants)


def test_a_changed_or_missing_tensor_is_named():
    checkpoint = {"state_dict": {"policy.w": torch.ones(4), "loss.m": torch.zeros(())}}
    assert stamp_checkpoint(checkpoint)
    assert verify_checkpoint(checkpoint, "x.ckpt")
    checkpoint["state_dict"]["policy.w"][2] = 5.0
    with pytest.raises(RuntimeError, match=r"x.ckpt is corrupt: tensor 'state_dict.policy.w'"):
        verify_checkpoint(checkpoint, "x.ckpt")
    del checkpoint["state_dict"]["policy.w"]
    with pytest.raises(RuntimeError, match=r"'state_dict\.policy\.w' is missing"):
        verify_checkpoint(checkpoint, "x.ckpt")


def test_a_checkpoint_without_fingerprints_is_not_verified():
    checkpoint = {"state_dict": {"w": torch.ones(1)}}
    assert not verify_checkpoint(checkpoint, "plain.ckpt")
    stamp_checkpoint(checkpoint)
    assert set(checkpoint[CHECKPOINT_KEY]) == {"state_dict.w"}


def _overwrite_inside(path, tensor: torch.Tensor, count: int = 400) -> None:
    """Write ``count`` random bytes into the stored bytes of ``tensor`` in file ``path``."""
    raw = bytearray(path.read_bytes())
    stored = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    start = raw.find(stored)
    assert start >= 0 and raw.find(stored, start + 1) < 0  # found once: it is this tensor
    rng = random.Random(0)
    raw[start : start + count] = bytes(rng.randrange(256) for _ in range(count))
    path.write_bytes(bytes(raw))


def test_resume_refuses_a_checkpoint_with_overwritten_policy_bytes(tmp_path):
    run = tmp_path / "run"
    train(compose_train_config(run, [*FAST_OVERRIDES, *LEAN_OVERRIDES]))
    last = run / "checkpoints" / "last.ckpt"
    name = "policy.model.embed_tokens.weight"
    weight = torch.load(last, weights_only=False)["state_dict"][name]
    assert weight.numel() * 4 > 400
    _overwrite_inside(last, weight)
    overrides = [*FAST_OVERRIDES, *LEAN_OVERRIDES, f"ckpt_path={last}", "trainer.max_steps=6"]
    with pytest.raises(RuntimeError, match=rf"last.ckpt is corrupt: tensor 'state_dict.{name}'"):
        train(compose_train_config(tmp_path / "resumed", overrides))
