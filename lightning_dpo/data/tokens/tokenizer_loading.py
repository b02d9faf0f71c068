"""Resolving the tokenizer argument of the data module (offline only)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.tokens.byte_tokenizer import build_byte_tokenizer
from lightning_dpo.data.tokens.char_tokenizer import build_char_tokenizer
from lightning_dpo.pretrained import resolve_pretrained


def load_tokenizer(
    tokenizer: str | PreTrainedTokenizerBase | None, text_data: bool = False
) -> PreTrainedTokenizerBase:
    """Returns a ready tokenizer: built-in, loaded from a local directory, or the one given.

    Which one, when:

    * a tokenizer object: that one;
    * a string: the tokenizer of a local directory (``AutoTokenizer.from_pretrained``, e.g.
      the pretrained model's) or of a GGUF file
      (:func:`~lightning_dpo.pretrained.resolve_pretrained`);
    * ``None`` with ``text_data`` (file data: ``train_file``/``path`` given):
      :func:`~lightning_dpo.data.tokens.byte_tokenizer.build_byte_tokenizer`, which represents
      any UTF-8 text exactly (one token per byte, no ``<unk>``);
    * ``None`` without (the embedded digit-sorting task):
      :func:`~lightning_dpo.data.tokens.char_tokenizer.build_char_tokenizer`, one token per
      character of the task's small alphabet (other characters would be ``<unk>``).

    When the tokenizer has no pad token its EOS token is used for padding (the given
    tokenizer object is modified in place).

    Args:
        tokenizer: ``None`` for a built-in tokenizer, a local directory, or a tokenizer.
        text_data: Whether the data is users' text rather than the embedded task.

    Returns:
        The tokenizer, with EOS and pad tokens.

    Raises:
        ValueError: If the tokenizer has no EOS token.
    """
    if tokenizer is None:
        tokenizer = build_byte_tokenizer() if text_data else build_char_tokenizer()
    elif isinstance(tokenizer, str):
        tokenizer = resolve_pretrained(tokenizer).load_tokenizer()
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
