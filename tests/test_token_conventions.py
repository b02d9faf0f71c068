"""BOS and EOS exactly once, as the tokenizer (or its chat template) makes them.

Three tokenizer kinds, ids pinned by hand: one that adds BOS itself (Llama's), one that has
a ``bos_token`` but never adds it (GPT-2's, SmolLM2's), and a chat template that writes BOS
as text. TRL's tokenisation of the same explicit records, where TRL is installed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lightning_dpo.data import PreferenceRecord
from lightning_dpo.data.tokens.tokenization import encode_records, special_prefix, tokenize_records
from tests.helpers import chatml, chatml_ids, chatml_tokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz ?!.<>/"
SPECIALS = ["<pad>", "<s>", "</s>"]
PAD, BOS, EOS = 0, 1, 2


def letter_tokenizer(adds_bos: bool) -> PreTrainedTokenizerFast:
    """One token per letter (id 3 + position), ``<s>``/``</s>`` specials; BOS added or not."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({letter: 3 + i for i, letter in enumerate(LETTERS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.add_special_tokens(SPECIALS)
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", BOS)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def letters(text: str) -> list[int]:
    return [3 + LETTERS.index(c) for c in text]


def encoded(tokenizer, prompt: str, chosen: str, rejected: str, templated: bool = False):
    record = PreferenceRecord(prompt, chosen, rejected, templated=templated)
    return encode_records([record], tokenizer)[0]


def test_a_tokenizer_that_adds_bos_gets_it_once():
    tok = letter_tokenizer(adds_bos=True)
    assert special_prefix(tok) == [BOS]
    assert encoded(tok, "hi?", "yes", "no") == (
        [BOS, *letters("hi?")],
        [*letters("yes"), EOS],
        [*letters("no"), EOS],
    )
    # BOS or EOS written in the text: parsed as the special, never a second one.
    assert encoded(tok, "<s>hi?", "yes</s>", "no") == (
        [BOS, *letters("hi?")],
        [*letters("yes"), EOS],
        [*letters("no"), EOS],
    )


def test_a_tokenizer_that_adds_no_bos_gets_no_stray_one():
    """GPT-2's and SmolLM2's tokenizers name a bos_token but never add it."""
    tok = letter_tokenizer(adds_bos=False)
    assert tok.bos_token_id == BOS and tok("hi?")["input_ids"] == letters("hi?")
    assert special_prefix(tok) == []
    assert encoded(tok, "hi?", "yes", "no") == (
        letters("hi?"),
        [*letters("yes"), EOS],
        [*letters("no"), EOS],
    )


def test_a_template_that_writes_bos_as_text_gets_it_once():
    tok = chatml_tokenizer()
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    assert special_prefix(tok) == [BOS]  # the byte tokenizer adds <s> to plain text too
    messages = [{"role": "user", "content": "hi?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>" + chatml(messages, generation_prompt=True)
    ids = encoded(tok, prompt, "yes<|im_end|>\n", "no<|im_end|>\n", templated=True)
    assert ids == (
        [BOS, *chatml_ids(tok, chatml(messages, generation_prompt=True))],
        chatml_ids(tok, "yes<|im_end|>\n"),  # the end-of-turn, no EOS after it
        chatml_ids(tok, "no<|im_end|>\n"),
    )


def test_a_cut_prompt_keeps_its_bos_and_an_empty_response_is_eos_alone():
    tok = letter_tokenizer(adds_bos=True)
    record = PreferenceRecord("abcdefghij", "", "no")
    (pair,) = tokenize_records([record], tok, max_length=8)
    assert list(pair.prompt_ids) == [
        BOS,
        *letters("ghij"),
    ]  # BOS kept, then the end: 8 - len("no</s>")
    assert list(pair.chosen_ids) == [EOS]
    assert list(pair.rejected_ids) == [*letters("no"), EOS]


def test_the_same_ids_as_trl_for_explicit_records():
    """TRL's own dataset preparation (``DPOTrainer._prepare_dataset``) on the same records."""
    pytest.importorskip("trl", reason="TRL is in the bench extra only")
    from datasets import Dataset
    from trl import DPOTrainer

    rows = [("hi?", "yes", "no"), ("why?", "because.", "no!"), ("<s>ok?", "yes</s>", "")]
    for adds_bos in (True, False):
        tok = letter_tokenizer(adds_bos)
        data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])
        trainer = SimpleNamespace(_tokenizer=tok)  # what _prepare_dataset reads of the trainer
        args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_end")
        theirs = DPOTrainer._prepare_dataset(trainer, data, tok, args, "train")
        for row, (prompt, chosen, rejected) in zip(theirs, rows, strict=True):
            ours = encoded(tok, prompt, chosen, rejected)
            their_prompt = row["prompt_ids"]
            if adds_bos and prompt.startswith("<s>"):  # README: differences from TRL
                assert their_prompt[:2] == [BOS, BOS] and ours[0][:2] != [BOS, BOS]
                their_prompt = their_prompt[1:]
            assert (their_prompt, row["chosen_ids"], row["rejected_ids"]) == ours
