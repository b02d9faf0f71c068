"""Resolving the tokenizer argument of the data module (offline only)."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lightning_dpo.data.char_tokenizer import build_char_tokenizer


def load_tokenizer(tokenizer: str | PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    """Returns a ready tokenizer: built-in, loaded from a local directory, or the one given.

    When the tokenizer has no pad token its EOS token is used for padding (the given
    tokenizer object is modified in place).

    Args:
        tokenizer: ``None`` for :func:`build_char_tokenizer`, a local directory for
            ``AutoTokenizer.from_pretrained(..., local_files_only=True)``, or a tokenizer.

    Returns:
        The tokenizer, with EOS and pad tokens.

    Raises:
        ValueError: If the tokenizer has no EOS token.
    """
    if tokenizer is None:
        tokenizer = build_char_tokenizer()
    elif isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
