"""Tokenise once (per dataset, across epochs and runs), the loss-mask property, fingerprints."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

import lightning_dpo.data.tokens.cache as token_cache_module
from lightning_dpo.data import (
    DataValidationError,
    PreferenceDataModule,
    PreferenceRecord,
    collate_pairs,
)
from lightning_dpo.data.settings import BatchSettings, DataSource, TokenSettings
from lightning_dpo.data.tokens.tokenization import tokenize_records
from tests.helpers import flip_bytes_in_the_middle

CORPUS = ["hello world", "the world is wide", "Q: hello world", "old bold world"] * 20


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    bos = backend.token_to_id("<s>")  # a tokenizer that adds BOS itself, as Llama's
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<s>"
    )


BPE = bpe_tokenizer()
PIECES = ["hello", " world", "wor", "ld", " ", "old", "b", "the", " is", "wide", "Q:", "o", "x"]
text = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)


def encode(s: str) -> list[int]:
    return BPE(s, add_special_tokens=False)["input_ids"]


@settings(max_examples=120, deadline=None)
@given(prompt=text, chosen=text, rejected=text, max_length=st.integers(4, 24))
def test_loss_mask_is_exactly_the_response_and_eos(prompt, chosen, rejected, max_length) -> None:
    record = PreferenceRecord(prompt, chosen, rejected)
    prompt_ids = [BPE.bos_token_id, *encode(prompt)]
    assert BPE(prompt)["input_ids"] == prompt_ids  # the tokenizer's own BOS, once
    body, keep = prompt_ids[1:], max_length // 2 - 1  # BOS is always kept
    kept_prompt = prompt_ids[:1] + (body if len(body) <= keep else body[len(body) - keep :])
    room = max_length - len(kept_prompt)
    cut = [[*encode(r), BPE.eos_token_id][:room] for r in (chosen, rejected)]
    if cut[0] == cut[1]:  # nothing to prefer within max_length: refused, never cut to equal
        with pytest.raises(DataValidationError, match=r"identical|differ"):
            tokenize_records([record], BPE, max_length, max_prompt_length=max_length // 2)
        return
    [pair] = tokenize_records([record], BPE, max_length, max_prompt_length=max_length // 2)
    batch = collate_pairs([pair], pad_token_id=BPE.eos_token_id)
    for row, response in enumerate((chosen, rejected)):
        ids, mask = batch["input_ids"][row], batch["loss_mask"][row]
        real = batch["attention_mask"][row].bool()
        assert ids[real & ~mask].tolist() == kept_prompt  # prompt: BOS + its end, unmasked
        assert ids[mask].tolist() == [*encode(response), BPE.eos_token_id][:room]
        assert mask.nonzero().flatten().tolist() == list(
            range(len(kept_prompt), len(kept_prompt) + min(room, len(encode(response)) + 1))
        )


def test_property_alphabet_does_merge_across_the_boundary() -> None:
    # The strategy above can produce a prompt and response that the tokenizer merges.
    assert encode("hello wor") + encode("ld") != encode("hello world")


def write_rows(path: Path, n: int) -> Path:
    rows = [{"prompt": f"{i} abc>", "chosen": "abc", "rejected": "acb"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def counting_encoder(monkeypatch) -> Counter:
    calls: Counter = Counter()
    original = token_cache_module.encode_records

    def counting(records, tokenizer):
        calls["records"] += len(records)
        calls["calls"] += 1
        return original(records, tokenizer)

    monkeypatch.setattr(token_cache_module, "encode_records", counting)
    return calls


def test_tokenised_once_per_dataset_across_epochs_and_runs(tmp_path: Path, monkeypatch) -> None:
    calls = counting_encoder(monkeypatch)
    data = write_rows(tmp_path / "d.jsonl", 40)
    cache = str(tmp_path / "cache")
    kwargs = {"source": DataSource(str(data)), "batches": BatchSettings(batch_size=8)}
    kwargs["tokens"] = TokenSettings(cache_dir=cache)
    dm = PreferenceDataModule(**kwargs)
    for _epoch in range(3):
        batches = list(dm.train_dataloader()) + list(dm.val_dataloader())
        assert sum(b["pair_index"].numel() for b in batches) == 40
    assert calls == {"calls": 2, "records": 40}  # train + val split, once each
    second = PreferenceDataModule(**kwargs)  # a new run with the same data and tokenizer
    second.setup()
    assert calls == {"calls": 2, "records": 40}  # served from the cache: no tokenizer call
    assert second.train_pairs == dm.train_pairs and second.val_pairs == dm.val_pairs
    assert second.fingerprint("train") == dm.fingerprint("train")
    shorter = TokenSettings(max_length=48, cache_dir=cache)
    PreferenceDataModule(**{**kwargs, "tokens": shorter}).setup()  # limits apply after the cache
    assert calls["calls"] == 2
    other = DataSource(str(write_rows(tmp_path / "e.jsonl", 41)))
    PreferenceDataModule(**{**kwargs, "source": other}).setup()
    assert calls["calls"] == 4  # other data: encoded afresh


def damage_flipped(entry: Path) -> None:
    (arrow,) = entry.glob("*.arrow")
    flip_bytes_in_the_middle(arrow)


def damage_truncated(entry: Path) -> None:
    (arrow,) = entry.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])


def damage_manifest_removed(entry: Path) -> None:
    (entry / token_cache_module.MANIFEST).unlink()


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (damage_flipped, ".arrow does not match its fingerprint"),
        (damage_truncated, ".arrow does not match its fingerprint"),
        (damage_manifest_removed, f"{token_cache_module.MANIFEST} is missing"),
    ],
    ids=["flipped-bytes", "truncated", "no-manifest"],
)
def test_a_token_cache_entry_that_does_not_verify_is_reported_never_used_and_replaced(
    tmp_path: Path, monkeypatch, caplog, damage, reported
) -> None:
    calls = counting_encoder(monkeypatch)
    data = write_rows(tmp_path / "d.jsonl", 40)
    kwargs = {
        "source": DataSource(str(data)),
        "tokens": TokenSettings(cache_dir=str(tmp_path / "cache")),
        "batches": BatchSettings(batch_size=8),
    }
    first = PreferenceDataModule(**kwargs)
    first.setup()
    entries = sorted((tmp_path / "cache").glob("encodings-*"))
    assert len(entries) == 2 and calls["calls"] == 2  # train and val
    for entry in entries:
        damage(entry)
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.data.tokens.cache"):
        second = PreferenceDataModule(**kwargs)
        second.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for entry in entries:  # each named, with what failed
        assert any(str(entry) in w and reported in w for w in warnings), warnings
    assert calls["calls"] == 4  # both encoded anew, not read from the damaged entries
    assert second.train_pairs == first.train_pairs and second.val_pairs == first.val_pairs
    third = PreferenceDataModule(**kwargs)  # the replaced entries verify and serve
    third.setup()
    assert calls["calls"] == 4 and third.train_pairs == first.train_pairs


FINGERPRINT = (
    "from lightning_dpo.data import PreferenceDataModule as D, DataSource, TokenSettings;"
    "import sys; d = D(source=DataSource(sys.argv[1]), tokens=TokenSettings(int(sys.argv[2])));"
    "print(d.fingerprint('train'), d.fingerprint('val'))"
)


def fingerprint_in_subprocess(path: Path, max_length: int = 64) -> list[str]:
    command = [sys.executable, "-c", FINGERPRINT, str(path), str(max_length)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()[-1].split()  # after the data report


@pytest.mark.slow
def test_fingerprint_is_stable_across_processes_and_changes_with_content(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "d.jsonl", 30)
    dm = PreferenceDataModule(source=DataSource(train_file=str(data)))
    assert len(dm.tokenizer) == 259  # the built-in byte tokenizer: stable across processes
    here = [dm.fingerprint("train"), dm.fingerprint("val")]
    assert all(len(f) == 64 and int(f, 16) >= 0 for f in here) and here[0] != here[1]
    assert fingerprint_in_subprocess(data) == here
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text(data.read_text())
    assert (
        PreferenceDataModule(source=DataSource(train_file=str(moved))).fingerprint("train")
        == here[0]
    )
    assert (
        PreferenceDataModule(
            source=DataSource(train_file=str(data)), tokens=TokenSettings(max_length=63)
        ).fingerprint("train")
        != here[0]
    )
    lines = data.read_text().splitlines()
    edited = json.loads(lines[0])
    edited["chosen"] = "abd"
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join([json.dumps(edited), *lines[1:]]))
    assert (
        PreferenceDataModule(source=DataSource(train_file=str(changed))).fingerprint("train")
        != here[0]
    )
    rewards = tmp_path / "rewards.jsonl"
    rewarded = [{**json.loads(x), "chosen_reward": 1, "rejected_reward": 0} for x in lines]
    rewards.write_text("\n".join(json.dumps(r) for r in rewarded))
    assert (
        PreferenceDataModule(source=DataSource(train_file=str(rewards))).fingerprint("train")
        != here[0]
    )


def test_pair_index_matches_the_split_and_survives_shuffle(tmp_path: Path) -> None:
    dm = PreferenceDataModule(
        seed=3, source=DataSource(num_train=32, num_val=8), batches=BatchSettings(batch_size=8)
    )
    seen = torch.cat([b["pair_index"] for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(32)) and seen.tolist() != list(range(32))
    for batch in dm.train_dataloader():
        for row, index in enumerate(batch["pair_index"].tolist()):
            pair = dm.train_pairs[index]
            width = len(pair.prompt_ids) + len(pair.chosen_ids)
            assert batch["input_ids"][row, :width].tolist() == list(
                pair.prompt_ids + pair.chosen_ids
            )
