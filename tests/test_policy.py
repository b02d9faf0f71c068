"""The policy: real local checkpoints train in train mode; context and vocabulary are checked."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback

from lightning_dpo.policy import build_policy
from lightning_dpo.training import build
from tests.helpers import (
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    compose_train_config,
    save_local_checkpoint,
)


class ModeRecorder(Callback):
    """Records, after each training step, whether every module of the policy is in train mode."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Record the modes of this step (the reference forward has restored them)."""
        self.modes.append(all(module.training for module in pl_module.policy.modules()))


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "qwen2", "mistral"])
def test_a_pretrained_checkpoint_is_built_in_train_mode(tmp_path, tokenizer, architecture):
    path = save_local_checkpoint(tmp_path / architecture, architecture, tokenizer)
    policy = build_policy(tokenizer, pretrained=str(path))
    assert all(module.training for module in policy.modules())


@pytest.mark.parametrize("model", ["full", "lora"])
def test_a_pretrained_gpt2_with_dropout_trains_in_train_mode(tmp_path, tokenizer, model):
    path = save_local_checkpoint(tmp_path / "gpt2", "gpt2", tokenizer, resid_pdrop=0.1)
    overrides = [f"model={model}", f"model.pretrained={path}", *FAST_OVERRIDES, *LEAN_OVERRIDES]
    if model == "lora":
        overrides.append("model.lora.target_modules=[c_attn]")
    datamodule, module, trainer = build(compose_train_config(tmp_path / "run", overrides))
    recorder = ModeRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    assert recorder.modes == [True] * 4


def test_the_tiny_model_gets_as_many_positions_as_the_data_needs(tokenizer):
    assert build_policy(tokenizer, max_length=512).config.max_position_embeddings == 512
    assert build_policy(tokenizer).config.max_position_embeddings == 256


def test_a_context_shorter_than_max_length_is_refused_naming_both(tmp_path, tokenizer):
    path = save_local_checkpoint(tmp_path / "gpt2", "gpt2", tokenizer)  # 128 positions
    cfg = compose_train_config(tmp_path, [f"model.pretrained={path}", "data.tokens.max_length=512"])
    with pytest.raises(InstantiationException) as error:
        build(cfg)
    message = str(error.value.__cause__)
    assert "data.tokens.max_length=512 is longer than the model's context" in message
    assert f"model.pretrained='{path}' has max_position_embeddings=128" in message


def test_the_tiny_model_refuses_an_explicit_context_that_is_too_short(tokenizer):
    with pytest.raises(ValueError, match=r"the tiny model \(model.tiny\)"):
        build_policy(tokenizer, tiny={"max_position_embeddings": 32}, max_length=64)


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tokenizer):
    path = save_local_checkpoint(tmp_path / "llama", "llama", tokenizer, vocab_size=8)
    with pytest.raises(ValueError, match=rf"the tokenizer has {len(tokenizer)} tokens but"):
        build_policy(tokenizer, pretrained=str(path))
