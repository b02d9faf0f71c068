"""Build the policy: a local Hugging Face model or a tiny Llama, optionally with LoRA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from lightning_dpo.pretrained import resolve_pretrained

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}
"""Default shape of the randomly initialised model used when no checkpoint is named
(``max_position_embeddings`` becomes the data's ``max_length`` when that is given)."""


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft model whose adapters can be disabled."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def has_trained_adapter(model: nn.Module) -> bool:
    """Whether a peft model's LoRA adapters are away from their zero init (``B != 0``).

    peft initialises ``lora_B`` to zeros, so a fresh adapter is the identity on the
    base model; any non-zero ``lora_B`` means the adapter was loaded or trained.
    """
    return any(
        "lora_B" in name and bool(param.detach().ne(0).any())
        for name, param in model.named_parameters()
    )


def build_tiny_llama(tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> LlamaForCausalLM:
    """A small randomly initialised Llama sized to ``tokenizer`` (no download).

    Args:
        tokenizer: Its length sets the vocabulary; its special tokens set the ids.
        **overrides: ``LlamaConfig`` fields replacing :data:`TINY_LLAMA`'s.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **{**TINY_LLAMA, **overrides},
    )
    return LlamaForCausalLM(config)


def load_pretrained(path: str) -> nn.Module:
    """Load a causal LM from a local directory or a GGUF file (never from the hub).

    See :func:`~lightning_dpo.pretrained.resolve_pretrained` (a GGUF file is dequantised
    to float and converted once into a cached Hugging Face directory).

    Raises:
        FileNotFoundError: ``path`` is neither a local directory nor a GGUF file.
        ImportError: A GGUF file without the ``gguf`` package.
    """
    return resolve_pretrained(path).load_model()


def context_length(model: nn.Module) -> int | None:
    """Positions the model's config says it takes (``max_position_embeddings``), if it says.

    GPT-2's ``n_positions`` is read through the same name (its config maps it).
    """
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def check_vocabulary(model: nn.Module, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Refuse a tokenizer whose ids do not all have a row in the model's embedding.

    Raises:
        ValueError: Naming both sizes (instead of an ``IndexError`` in the first forward).
    """
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but {source} embeds only {rows}: "
            "use the model's own tokenizer (data.tokenizer=<the model's directory>)"
        )


def check_context(model: nn.Module, max_length: int, source: str) -> None:
    """Refuse a model whose context is shorter than the sequences the data gives it.

    Args:
        model: The causal LM.
        max_length: The longest prompt + response the data gives (``data.tokens.max_length``).
        source: What the model is, for the message (a directory, or the tiny model's field).

    Raises:
        ValueError: Naming both settings, instead of a bare ``IndexError`` in the first
            forward of a model with absolute position embeddings (GPT-2).
    """
    positions = context_length(model)
    if positions is not None and max_length > positions:
        raise ValueError(
            f"data.tokens.max_length={max_length} is longer than the model's context: {source} "
            f"has max_position_embeddings={positions}. Set data.tokens.max_length<={positions}, "
            "or use a model with a longer context."
        )


def add_lora(
    model: nn.Module,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] | str = "all-linear",
) -> nn.Module:
    """Wrap ``model`` with fresh peft LoRA adapters; the base weights are frozen.

    Args:
        model: The base causal LM.
        r: Rank of the adapters.
        lora_alpha: Scaling numerator (the update is scaled by ``lora_alpha / r``).
        lora_dropout: Dropout on the adapter input.
        target_modules: Module names to adapt, or ``"all-linear"``.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_adapter(model: nn.Module, path: str) -> nn.Module:
    """Wrap ``model`` with a trained peft adapter from a local directory, trainable.

    Raises:
        FileNotFoundError: ``path`` is not a local directory.
    """
    from peft import PeftModel

    if not Path(path).is_dir():
        raise FileNotFoundError(f"model.adapter={path!r} is not a local adapter directory")
    return PeftModel.from_pretrained(model, path, is_trainable=True, local_files_only=True)


ADAPTERS_EXCLUDE_EACH_OTHER = (
    "model.lora (fresh adapters) and model.adapter (a trained one) exclude each other: "
    "set one of them to null"
)


def _base_model(
    tokenizer: PreTrainedTokenizerBase,
    pretrained: str | None,
    tiny: dict[str, Any] | None,
    max_length: int | None,
) -> tuple[nn.Module, str]:
    """The pretrained model, or the tiny random Llama, and how messages name it."""
    if pretrained is not None:
        return load_pretrained(pretrained), f"model.pretrained={pretrained!r}"
    tiny = {key: value for key, value in (tiny or {}).items() if value is not None}
    if max_length is not None:
        tiny.setdefault("max_position_embeddings", max_length)
    return build_tiny_llama(tokenizer, **tiny), "the tiny model (model.tiny)"


def build_policy(
    tokenizer: PreTrainedTokenizerBase,
    pretrained: str | None = None,
    tiny: dict[str, Any] | None = None,
    lora: dict[str, Any] | None = None,
    adapter: str | None = None,
    max_length: int | None = None,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Build the policy to train, in train mode.

    ``from_pretrained`` returns a model in eval mode, which Lightning keeps: without
    :meth:`~torch.nn.Module.train` here a real checkpoint would train without dropout.

    Args:
        tokenizer: The data's tokenizer (sizes the tiny model's vocabulary).
        pretrained: Local directory of a Hugging Face causal LM, or a GGUF file; ``None``
            builds the tiny random Llama instead.
        tiny: ``LlamaConfig`` overrides for the tiny model.
        lora: ``add_lora`` arguments for fresh adapters; ``None`` trains all parameters.
        adapter: Local directory of a trained peft adapter to continue training (the
            reference is then base + this adapter, frozen). Excludes ``lora``.
        max_length: The longest prompt + response (``data.tokens.max_length``): the tiny
            model's positions unless ``tiny`` sets them; a model with fewer is refused
            (:func:`check_context`). ``None`` checks nothing.
        activation_checkpointing: Recompute each decoder layer in backward: less memory,
            the same log-probs and gradients (:func:`enable_activation_checkpointing`).

    Raises:
        ValueError: ``lora`` and ``adapter`` both set, a context under ``max_length``, or
            activation checkpointing on a model that does not support it.
    """
    if lora is not None and adapter is not None:
        raise ValueError(ADAPTERS_EXCLUDE_EACH_OTHER)
    model, source = _base_model(tokenizer, pretrained, tiny, max_length)
    check_vocabulary(model, tokenizer, source)
    if max_length is not None:
        check_context(model, max_length, source)
    if activation_checkpointing:
        enable_activation_checkpointing(model, source)
    if lora is not None:
        model = add_lora(model, **lora)
    if adapter is not None:
        model = load_adapter(model, adapter)
    return model.train()


def enable_activation_checkpointing(model: nn.Module, source: str) -> None:
    """Checkpoint every decoder layer of a ``transformers`` model (non-reentrant).

    Non-reentrant ``torch.utils.checkpoint`` (transformers'
    ``activation_checkpointing_enable``, formerly ``gradient_checkpointing_enable``, with
    ``use_reentrant=False``, as TRL's default)
    recomputes each layer in backward with the RNG state of the forward, so dropout draws
    the same masks: log-probs and gradients are the run's without it. It needs no input
    that requires grad, so it also holds under LoRA's frozen embeddings, and it acts in
    train mode only: the reference forward (eval mode, no grad) is unchanged.

    Raises:
        ValueError: The model does not support it (``supports_gradient_checkpointing``).
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"model.activation_checkpointing=true: {source} ({type(model).__name__}) does "
            "not support gradient checkpointing; set it to false"
        )
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def shard_policy(policy: nn.Module, mesh: Any) -> None:
    """Shard ``policy`` with FSDP2 over ``mesh`` (its data-parallel dimension).

    Each block the model names as not to be split (``_no_split_modules``, its decoder
    layers in ``transformers``; peft forwards it) becomes its own FSDP unit, then the
    whole policy.
    """
    from torch.distributed.fsdp import fully_shard

    blocks = set(policy._no_split_modules or ())
    if not blocks:
        rank_zero_warn(f"{type(policy).__name__} names no blocks: one FSDP unit")
    for module in policy.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(policy, mesh=mesh)
