"""Offline byte-level tokenizer for any UTF-8 text (built in-process, no download).

Every byte is one token, so any text (capitals, newlines, emoji, CJK, curly quotes) is
represented exactly and nothing is ever unknown: there is no ``<unk>`` token. It is the
default for file data without a pretrained tokenizer (see
:func:`~lightning_dpo.data.tokens.tokenizer_loading.load_tokenizer`), sized for the tiny model.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lightning_dpo.data.tokens.char_tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, wrap_backend

#: Special tokens, ids 0, 1, 2; byte ``b`` has id ``len(BYTE_SPECIAL_TOKENS) + b``.
BYTE_SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
NUM_BYTES = 256


def byte_symbols() -> list[str]:
    """The printable symbol of each byte value, in byte order (GPT-2's byte-level mapping).

    Printable Latin-1 bytes stand for themselves; the others (control characters, space,
    ...) are shifted to ``chr(256 + k)``, as ``tokenizers``' ``ByteLevel`` pre-tokenizer does.

    Returns:
        256 distinct one-character strings; entry ``b`` is the symbol of byte ``b``.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    symbols, shifted = [], 0
    for byte in range(NUM_BYTES):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(NUM_BYTES + shifted))
            shifted += 1
    return symbols


def byte_vocab() -> dict[str, int]:
    """The deterministic vocabulary: the special tokens first, then the 256 byte symbols."""
    vocab = {token: i for i, token in enumerate(BYTE_SPECIAL_TOKENS)}
    for symbol in byte_symbols():
        vocab[symbol] = len(vocab)
    return vocab


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Builds a byte-level tokenizer (a ByteLevel BPE without merges) with ``tokenizers``.

    Each UTF-8 byte of the text is one token, so ``decode(encode(text)) == text`` for any
    text and no token is unknown. Special-token strings inside the text are parsed as
    the special token, as every ``transformers`` tokenizer parses its own: ``"hi</s>"`` ends
    with the EOS id (libraries that append ``eos_token`` as text, TRL among them, rely on
    it), and this survives ``save_pretrained``. With
    ``add_special_tokens=True`` (the default) encoding prepends ``<s>``, as the char
    tokenizer does. Ids are the same on every call and in every process.

    ``model_max_length`` keeps ``transformers``' "no limit" value: the tokenizer belongs to
    no model and has no context of its own (the data's ``max_length`` bounds sequences).

    Returns:
        A fast tokenizer of 259 tokens: ``<pad>`` (0), ``<s>`` (1, bos), ``</s>`` (2, eos)
        and the bytes (``3 + byte``); it has no ``<unk>``.
    """
    vocab = byte_vocab()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(BYTE_SPECIAL_TOKENS))
    return wrap_backend(backend, vocab[BOS_TOKEN])
