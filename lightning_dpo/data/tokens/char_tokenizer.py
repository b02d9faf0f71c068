"""Offline character-level tokenizer for the embedded task (built in-process, no download)."""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
#: Characters with their own id, in id order after the special tokens.
ALPHABET = string.digits + ">" + " " + string.ascii_lowercase + ".,:;=+-*/()<?!'\""


def char_vocab(alphabet: str = ALPHABET) -> dict[str, int]:
    """Builds the deterministic vocabulary: special tokens first, then ``alphabet`` in order.

    Args:
        alphabet: Characters to include; duplicates are ignored after their first occurrence.

    Returns:
        Mapping from token to id.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))
    return vocab


def build_char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """Builds a character-level tokenizer over ``alphabet`` with the ``tokenizers`` library.

    Every character is one token (unknown characters map to ``<unk>``); decoding fuses the
    characters back, so ``decode(encode(text))`` round-trips for text over ``alphabet``.
    With ``add_special_tokens=True`` (the default) encoding prepends ``<s>``, like the
    prompts used in training. Ids are the same on every call.

    Args:
        alphabet: Characters with their own token.

    Returns:
        A fast tokenizer with ``<pad>``, ``<s>`` (bos), ``</s>`` (eos) and ``<unk>``;
        ``len(tokenizer)`` is the vocabulary size.
    """
    vocab = char_vocab(alphabet)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return wrap_backend(backend, vocab[BOS_TOKEN], unk_token=UNK_TOKEN)


def wrap_backend(backend: Tokenizer, bos_id: int, **options: object) -> PreTrainedTokenizerFast:
    """A ``transformers`` tokenizer over a ``tokenizers`` backend with this package's specials.

    Encoding with special tokens prepends ``<s>``; ``<pad>``, ``<s>`` and ``</s>`` are the
    pad, bos and eos tokens; padding is on the right.

    Args:
        backend: The ``tokenizers`` model, pre-tokenizer and decoder.
        bos_id: The id of ``<s>`` in the backend's vocabulary.
        **options: Further ``PreTrainedTokenizerFast`` arguments (``unk_token``, ...).
    """
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        **options,
    )
