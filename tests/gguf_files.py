"""A tiny Llama GGUF file written in-process with ``gguf.GGUFWriter`` (no download).

The file is what llama.cpp's ``convert_hf_to_gguf.py`` makes of a small random
``LlamaForCausalLM``: llama metadata, F32 tensors under GGUF names (``q``/``k`` permuted as
llama.cpp permutes them, which ``transformers`` undoes when reading), a byte-level BPE
tokenizer (``tokenizer.ggml.model = "gpt2"``) with ChatML special tokens and a ChatML chat
template. The model it came from is returned, so a test can compare logits exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
"""Control tokens, first in the vocabulary as in SmolLM2's: ids 0, 1 and 2."""
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0
MERGES = [("h", "e"), ("l", "l"), ("Ġ", "w"), ("o", "r"), ("he", "ll"), ("Ġw", "or"), ("1", "2")]
"""A few byte-level BPE merges (``Ġ`` is the space), each making a token of the vocabulary."""
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, as SmolLM2-Instruct's (without its default system prompt)."""
SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
}
_CONTROL, _NORMAL = 3, 1  # gguf.TokenType values


def vocabulary() -> list[str]:
    """The tokens: the specials, the 256 byte symbols, then one token per merge."""
    spelling = bytes_to_unicode()
    return [*SPECIAL_TOKENS, *(spelling[b] for b in range(256)), *(a + b for a, b in MERGES)]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random Llama of :data:`SHAPE` sized to :func:`vocabulary`, in eval mode."""
    config = LlamaConfig(
        vocab_size=len(vocabulary()),
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
        **SHAPE,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k permutation (rotary halves interleaved), per head."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
    """The model's weights under their GGUF names, as float32 arrays."""
    config, weights = model.config, model.state_dict()
    tensors = {
        "token_embd.weight": weights["model.embed_tokens.weight"],
        "output_norm.weight": weights["model.norm.weight"],
        "output.weight": weights["lm_head.weight"],
    }
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in names.items():
            tensors[f"blk.{layer}.{gguf_name}.weight"] = weights[
                f"model.layers.{layer}.{hf_name}.weight"
            ]
    arrays = {name: tensor.detach().float().numpy() for name, tensor in tensors.items()}
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    for layer in range(config.num_hidden_layers):
        for name, count in heads.items():
            key = f"blk.{layer}.{name}.weight"
            arrays[key] = _permute(arrays[key], count)
    return arrays


def _add_metadata(writer, config: LlamaConfig) -> None:
    """Llama hyper-parameters and the tokenizer, under llama.cpp's keys."""
    tokens = vocabulary()
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([_CONTROL if t in SPECIAL_TOKENS else _NORMAL for t in tokens])
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_tiny_gguf(path: Path, seed: int = 0) -> LlamaForCausalLM:
    """Write a tiny Llama GGUF file at ``path``; returns the model its weights came from."""
    import gguf

    model = tiny_llama(seed)
    writer = gguf.GGUFWriter(path, "llama")
    _add_metadata(writer, model.config)
    for name, array in gguf_tensors(model).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
