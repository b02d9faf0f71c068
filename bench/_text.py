"""Real preference data for the benchmarks: its texts, and a BPE tokenizer trained on them.

Not a benchmark itself (imported as a sibling module, like ``_models.py``). Nothing is
downloaded: the tokenizer is a byte-level BPE trained in-process on the data's own text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lightning_dpo.data import read_rows

SPECIALS = ["<pad>", "<s>", "</s>"]
"""Ids 0, 1, 2: the padding, BOS and EOS of ``_models.build_llama``'s configs."""


def record_texts(path: str | Path) -> list[str]:
    """Every string field of every record of a preference data file (any supported source)."""
    texts: list[str] = []
    for row in read_rows(str(path)):
        if isinstance(row.value, dict):
            texts += [value for value in row.value.values() if isinstance(value, str)]
    return texts


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``vocab_size`` tokens trained on ``texts`` (pad 0, BOS 1, EOS 2).

    Like Llama's tokenizer it puts BOS first when special tokens are added; this package
    adds it to the prompt itself either way.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    # BOS first when special tokens are added, as Llama's tokenizer does (TRL tokenises so).
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", SPECIALS.index("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
