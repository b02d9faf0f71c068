"""GGUF checkpoints: loaded through transformers, converted once, trained, exported as HF."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from lightning_dpo import pretrained
from lightning_dpo.callbacks.export import BASE_MODEL_SUBDIR, export_policy
from lightning_dpo.data.tokens.tokenizer_loading import load_tokenizer
from lightning_dpo.policy import build_policy, is_peft_model
from lightning_dpo.pretrained import MANIFEST, resolve_pretrained
from lightning_dpo.training import train
from tests.gguf_files import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, vocabulary, write_tiny_gguf
from tests.helpers import FAST_OVERRIDES, compose_train_config

pytest.importorskip("gguf")

CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
CHATML = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nworld<|im_end|>\n"
LORA = {"r": 4, "lora_alpha": 8}


class TinyGGUF(NamedTuple):
    """A GGUF file written by the test, and its source model."""

    path: Path
    model: LlamaForCausalLM
    """The model the file's weights came from (eval mode)."""


@pytest.fixture(autouse=True)
def gguf_cache(tmp_path, monkeypatch) -> Path:
    """The converted-GGUF cache under the test's ``tmp_path``, never ``~/.cache``."""
    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(tmp_path / "cache"))
    pretrained._converted.cache_clear()
    yield tmp_path / "cache" / "gguf"
    pretrained._converted.cache_clear()


@pytest.fixture
def tiny_gguf(tmp_path) -> TinyGGUF:
    path = tmp_path / "models" / "tiny-llama-f32.gguf"
    path.parent.mkdir()
    return TinyGGUF(path, write_tiny_gguf(path))


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """The GGUF files ``_convert`` converts during the test, in order."""
    converted, convert = [], pretrained._convert

    def spy(gguf: Path, entry: Path, source_fingerprint: str) -> None:
        converted.append(gguf)
        convert(gguf, entry, source_fingerprint)

    monkeypatch.setattr(pretrained, "_convert", spy)
    return converted


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


def sample_ids() -> torch.Tensor:
    return torch.randint(0, len(vocabulary()), (2, 16), generator=torch.Generator().manual_seed(0))


def test_build_policy_loads_a_gguf_with_its_weights(tiny_gguf):
    tokenizer = load_tokenizer(str(tiny_gguf.path))
    policy = build_policy(tokenizer, pretrained=str(tiny_gguf.path), max_length=64)
    assert all(module.training for module in policy.modules())
    assert policy.dtype == torch.float32
    # transformers un-permutes llama.cpp's q/k layout: the logits are the original model's.
    ids = sample_ids()
    torch.testing.assert_close(logits(policy, ids), logits(tiny_gguf.model, ids), rtol=0, atol=0)
    assert getattr(policy.config, "quantization_config", None) is None


def test_build_policy_adds_lora_to_a_gguf_base(tiny_gguf):
    tokenizer = load_tokenizer(str(tiny_gguf.path))
    policy = build_policy(tokenizer, pretrained=str(tiny_gguf.path), lora=LORA)
    assert is_peft_model(policy)
    trainable = [name for name, param in policy.named_parameters() if param.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    ids = sample_ids()  # fresh adapters are the identity on the base
    torch.testing.assert_close(logits(policy, ids), logits(tiny_gguf.model, ids), rtol=0, atol=0)


def test_the_tokenizer_of_a_gguf_round_trips_text_and_has_its_chat_template(tiny_gguf):
    tokenizer = load_tokenizer(str(tiny_gguf.path))
    assert len(tokenizer) == len(vocabulary())
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (BOS_ID, EOS_ID)
    assert tokenizer.pad_token_id == PAD_ID
    for text in ("hello world", "31415>11345", "naïve café ✓", CHATML):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer("hello", add_special_tokens=False)["input_ids"] == [
        vocabulary().index("hell"),
        vocabulary().index("o"),
    ]
    special = tokenizer("<|im_start|>user<|im_end|>", add_special_tokens=False)["input_ids"]
    assert special[0] == SPECIAL_TOKENS.index("<|im_start|>")
    assert special[-1] == SPECIAL_TOKENS.index("<|im_end|>")
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == CHATML


def test_a_gguf_is_converted_once_into_the_cache_and_reused(tiny_gguf, gguf_cache, conversions):
    first = resolve_pretrained(tiny_gguf.path)
    assert first.gguf_file is None and first.directory.parent == gguf_cache
    assert (first.directory / "config.json").is_file()
    assert (first.directory / MANIFEST).is_file()
    weights = first.directory / "model.safetensors"
    written = weights.stat().st_mtime_ns
    pretrained._converted.cache_clear()  # as a new process: verify the entry, then reuse it
    second = resolve_pretrained(str(tiny_gguf.path))
    assert second == first
    assert conversions == [tiny_gguf.path.resolve()]
    assert weights.stat().st_mtime_ns == written
    ids = sample_ids()
    torch.testing.assert_close(
        logits(second.load_model(), ids), logits(tiny_gguf.model, ids), rtol=0, atol=0
    )
    assert second.load_tokenizer().apply_chat_template(CHAT, tokenize=False) == CHATML


def _flip_a_byte(entry: Path) -> None:
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (_flip_a_byte, "model.safetensors does not match its fingerprint"),
        (lambda entry: (entry / MANIFEST).unlink(), f"{MANIFEST} is missing"),
        (lambda entry: (entry / MANIFEST).write_text("{"), f"{MANIFEST} is unreadable"),
        (lambda entry: (entry / "tokenizer.json").unlink(), "are not the ones written"),
        (lambda entry: (entry / "extra.bin").write_bytes(b"x"), "are not the ones written"),
    ],
    ids=["flipped-byte", "no-manifest", "bad-manifest", "missing-file", "extra-file"],
)
def test_a_damaged_entry_is_reported_and_rebuilt(tiny_gguf, conversions, caplog, damage, reported):
    entry = resolve_pretrained(tiny_gguf.path).directory
    damage(entry)
    pretrained._converted.cache_clear()
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.pretrained"):
        rebuilt = resolve_pretrained(tiny_gguf.path)
    assert rebuilt.directory == entry
    assert len(conversions) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not verify" in w and reported in w for w in warnings), warnings
    assert pretrained._entry_problem(entry) is None
    ids = sample_ids()
    torch.testing.assert_close(
        logits(rebuilt.load_model(), ids), logits(tiny_gguf.model, ids), rtol=0, atol=0
    )


def test_a_changed_gguf_gets_a_new_entry(tiny_gguf, conversions):
    first = resolve_pretrained(tiny_gguf.path).directory
    write_tiny_gguf(tiny_gguf.path, seed=1)  # same size: the entry is keyed by content
    pretrained._converted.cache_clear()
    second = resolve_pretrained(tiny_gguf.path).directory
    assert second != first and len(conversions) == 2


def test_without_the_gguf_package_the_error_names_the_extra(tiny_gguf, gguf_cache, monkeypatch):
    find_spec = importlib.util.find_spec

    def without_gguf(name, *args, **kwargs):
        return None if name == "gguf" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_gguf)
    with pytest.raises(ImportError, match=r"pip install 'lightning-dpo\[gguf\]'") as error:
        resolve_pretrained(tiny_gguf.path)
    assert str(tiny_gguf.path) in str(error.value)
    assert not gguf_cache.exists()


NOT_FOUND = r"neither a local directory nor a \.gguf file"


@pytest.mark.parametrize("name", ["missing.gguf", "missing-directory"])
def test_a_path_that_does_not_exist_is_refused(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=NOT_FOUND):
        resolve_pretrained(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=NOT_FOUND):
        build_policy(load_tokenizer(None), pretrained=str(tmp_path / name))


def test_an_unwritable_cache_reads_the_gguf_directly(tiny_gguf, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.pretrained"):
        direct = resolve_pretrained(tiny_gguf.path)
    assert direct == pretrained.Pretrained(tiny_gguf.path.parent, tiny_gguf.path.name)
    assert "Cannot cache the converted GGUF" in caplog.text
    ids = sample_ids()
    torch.testing.assert_close(
        logits(direct.load_model(), ids), logits(tiny_gguf.model, ids), rtol=0, atol=0
    )
    assert direct.load_tokenizer().apply_chat_template(CHAT, tokenize=False) == CHATML


def test_a_lora_export_on_a_base_read_directly_from_gguf_carries_the_base(
    tiny_gguf, tmp_path, monkeypatch
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(blocker))
    tokenizer = load_tokenizer(str(tiny_gguf.path))
    policy = build_policy(tokenizer, pretrained=str(tiny_gguf.path), lora=LORA)
    base_path = Path(policy.peft_config["default"].base_model_name_or_path)
    assert base_path.is_dir() and not (base_path / "config.json").exists()  # the GGUF's folder
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    export_dir = export_policy(policy, tmp_path / "export", tokenizer)
    assert (export_dir / BASE_MODEL_SUBDIR / "config.json").is_file()
    reloaded = AutoPeftModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
    ids = sample_ids()
    torch.testing.assert_close(logits(reloaded, ids), logits(policy, ids), rtol=0, atol=1e-6)
    with reloaded.disable_adapter():
        base = logits(reloaded, ids)
    torch.testing.assert_close(base, logits(tiny_gguf.model, ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["full", "lora"])
def test_training_from_a_gguf_exports_a_plain_hugging_face_model(
    tmp_path, tiny_gguf, gguf_cache, model
):
    overrides = [
        f"model={model}",
        f"model.pretrained={tiny_gguf.path}",
        *FAST_OVERRIDES,
        "~callbacks.training_plot",
        "~callbacks.samples",
    ]
    metrics = train(compose_train_config(tmp_path / "run", overrides))
    assert "train/loss" in metrics
    export_dir = tmp_path / "run" / "hf_export"
    assert not list(export_dir.glob("*.gguf"))
    ids = sample_ids()
    if model == "full":
        assert (export_dir / "model.safetensors").is_file()
        reloaded = AutoModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
        assert getattr(reloaded.config, "quantization_config", None) is None
    else:
        assert not (export_dir / "model.safetensors").exists()
        config = json.loads((export_dir / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]).parent == gguf_cache  # the converted base
        assert not (export_dir / BASE_MODEL_SUBDIR).exists()
        reloaded = AutoPeftModelForCausalLM.from_pretrained(export_dir, local_files_only=True)
        with reloaded.disable_adapter():
            base = logits(reloaded, ids)
        torch.testing.assert_close(base, logits(tiny_gguf.model, ids), rtol=0, atol=1e-6)
    # Trained: the export is not the GGUF's model any more.
    assert not torch.allclose(logits(reloaded, ids), logits(tiny_gguf.model, ids), atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == CHATML
