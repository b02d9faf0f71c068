"""Tests of lightning_dpo.data: records, sort task, tokenizer, tokenisation, collate, datamodule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import lightning_dpo.data.tokens.cache as token_cache_module
from lightning_dpo.data import (
    DataValidationError,
    PreferenceDataModule,
    PreferenceRecord,
    TokenizedPair,
    build_char_tokenizer,
    collate_pairs,
    generate_sort_splits,
    generate_sort_task,
    read_jsonl,
    split_by_prompt,
    tokenize_record,
    tokenize_records,
)
from lightning_dpo.data.settings import BatchSettings, DataSource
from tests.helpers import write_jsonl

REWARD_FIELDS = ("chosen_reward", "rejected_reward")


def pair_row(i: int, rewards: bool = False) -> dict[str, object]:
    row: dict[str, object] = {"prompt": f"{i} abc>", "chosen": "abc", "rejected": "acb"}
    if rewards:
        row.update(chosen_reward=1.0, rejected_reward=0)
    return row


@pytest.fixture(scope="module")
def char_tok() -> PreTrainedTokenizerFast:
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def bpe_tok() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in-process (no download), with EOS and no BOS/pad."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["hello world", "the world is wide", "Q: hello world", "old bold world"] * 20
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


# --- embedded sort task -----------------------------------------------------------------


def test_sort_task_is_deterministic_per_seed() -> None:
    assert generate_sort_task(50, seed=3) == generate_sort_task(50, seed=3)
    assert generate_sort_task(50, seed=3) != generate_sort_task(50, seed=4)


def test_sort_task_pairs_are_right_and_wrong_answers() -> None:
    records = generate_sort_task(300, seed=0)
    assert len({r.prompt for r in records}) == 300
    for r in records:
        digits, sep = r.prompt[:-1], r.prompt[-1]
        assert sep == ">" and digits.isdigit() and 3 <= len(digits) <= 8
        assert r.chosen == "".join(sorted(digits))
        assert sorted(r.rejected) == sorted(r.chosen)
        assert r.rejected != r.chosen
        assert any(a > b for a, b in zip(r.rejected, r.rejected[1:], strict=False))
        assert r.chosen_reward is None and r.rejected_reward is None


def test_sort_task_rewards() -> None:
    for r in generate_sort_task(50, seed=1, with_rewards=True):
        assert r.chosen_reward == 1.0
        assert r.rejected_reward is not None and 0.0 <= r.rejected_reward < 1.0


def test_sort_splits_hold_out_prompts() -> None:
    train, val = generate_sort_splits(500, 100, seed=0)
    assert (len(train), len(val)) == (500, 100)
    assert not {r.prompt for r in train} & {r.prompt for r in val}
    assert (train, val) == generate_sort_splits(500, 100, seed=0)


# --- character tokenizer ----------------------------------------------------------------


def test_char_tokenizer_round_trip(char_tok: PreTrainedTokenizerFast) -> None:
    for text in ["31415>", "11345", "0>", "sort me: 9 8 7>"]:
        ids = char_tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)
        assert char_tok.decode(ids) == text
    ids = char_tok("31415>")["input_ids"]
    assert ids[0] == char_tok.bos_token_id
    assert char_tok.decode(ids, skip_special_tokens=True) == "31415>"


def test_char_tokenizer_vocab_is_deterministic(char_tok: PreTrainedTokenizerFast) -> None:
    other = build_char_tokenizer()
    assert other.get_vocab() == char_tok.get_vocab()
    assert len(other) == len(char_tok) == len(char_tok.get_vocab())
    specials = [char_tok.pad_token_id, char_tok.bos_token_id, char_tok.eos_token_id]
    assert [*specials, char_tok.unk_token_id] == [0, 1, 2, 3]
    assert char_tok("~", add_special_tokens=False)["input_ids"] == [char_tok.unk_token_id]


# --- read_jsonl -------------------------------------------------------------------------


def test_read_jsonl_valid_without_rewards(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [pair_row(0), "", "  ", pair_row(1)])
    records = read_jsonl(path)
    assert [r.line for r in records] == [1, 4]
    assert records[0] == PreferenceRecord("0 abc>", "abc", "acb", source=str(path), line=1)
    assert not any(r.has_rewards for r in records)


def test_read_jsonl_valid_with_rewards(tmp_path: Path) -> None:
    row = {**pair_row(0, rewards=True), "extra": [1, 2]}
    records = read_jsonl(write_jsonl(tmp_path / "r.jsonl", [row, pair_row(1, rewards=True)]))
    assert [(r.chosen_reward, r.rejected_reward) for r in records] == [(1.0, 0.0)] * 2
    assert isinstance(records[0].rejected_reward, float)


BAD_RECORDS = {
    "broken_json": ('{"prompt": "a", "chosen": ', "invalid JSON"),
    "not_object": ('["a", "b", "c"]', "expected a JSON object"),
    "missing_prompt": ({"chosen": "a", "rejected": "b"}, "field 'prompt'"),
    "non_string_prompt": ({"prompt": 7, "chosen": "a", "rejected": "b"}, "field 'prompt'"),
    "missing_chosen": ({"prompt": "p", "rejected": "b"}, "field 'chosen'"),
    "non_string_chosen": ({"prompt": "p", "chosen": 42, "rejected": "b"}, "field 'chosen'"),
    "null_rejected": ({"prompt": "p", "chosen": "a", "rejected": None}, "field 'rejected'"),
    "both_empty": ({"prompt": "p", "chosen": "", "rejected": " "}, "fields 'chosen', 'rejected'"),
    "identical": ({"prompt": "p", "chosen": "a", "rejected": "a"}, "field 'rejected'"),
    "string_reward": (
        {**pair_row(9), "chosen_reward": "1", "rejected_reward": 0},
        "field 'chosen_reward'",
    ),
    "bool_reward": (
        {**pair_row(9), "chosen_reward": 1.0, "rejected_reward": True},
        "field 'rejected_reward'",
    ),
    "nan_reward": (
        '{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_reward": NaN, '
        '"rejected_reward": 0}',
        "field 'chosen_reward'",
    ),
    "one_reward": ({**pair_row(9), "chosen_reward": 1.0}, "field 'rejected_reward'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_read_jsonl_rejects_bad_record(tmp_path: Path, kind: str) -> None:
    bad, field = BAD_RECORDS[kind]
    path = write_jsonl(tmp_path / "bad_data.jsonl", [pair_row(0), "", bad, pair_row(1)])
    with pytest.raises(DataValidationError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert field in message
    assert "expected" in message


def test_read_jsonl_message_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": 42, "rejected": "b"}])
    with pytest.raises(
        DataValidationError,
        match=r"train\.jsonl:1: field 'chosen': expected a string, got 42 "
        r"\(format explicit, set by data.records.format\)$",
    ):
        read_jsonl(path)


def test_read_jsonl_rejects_rewards_on_some_records_only(tmp_path: Path) -> None:
    rows = [pair_row(0, rewards=True), pair_row(1, rewards=True), pair_row(2)]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: fields 'chosen_reward', 'rejected_reward'")


def test_read_jsonl_reports_every_bad_line(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": "", "rejected": "\n"}, pair_row(1), "nope"]
    with pytest.raises(DataValidationError) as info:
        read_jsonl(write_jsonl(tmp_path / "two.jsonl", rows))
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines] == ["1", "3"]


def test_read_jsonl_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"empty\.jsonl"):
        read_jsonl(path)


# --- tokenisation -----------------------------------------------------------------------


def response_texts(batch: dict[str, torch.Tensor], tok: PreTrainedTokenizerFast) -> list[str]:
    """Decodes the loss-masked tokens of every row."""
    return [
        tok.decode(ids[mask].tolist())
        for ids, mask in zip(batch["input_ids"], batch["loss_mask"], strict=True)
    ]


def test_loss_mask_covers_exactly_response_and_eos(char_tok: PreTrainedTokenizerFast) -> None:
    record = PreferenceRecord("31415>", "11345", "13145")
    pair = tokenize_record(record, char_tok, max_length=64)
    assert pair.prompt_ids[0] == char_tok.bos_token_id
    assert char_tok.decode(pair.prompt_ids) == "<s>31415>"
    batch = collate_pairs([pair], char_tok.pad_token_id)
    assert response_texts(batch, char_tok) == ["11345</s>", "13145</s>"]
    prompt_len = len(pair.prompt_ids)
    assert not batch["loss_mask"][:, :prompt_len].any()
    assert batch["loss_mask"][:, prompt_len:].all()


def test_truncation_keeps_prompt_end_and_response_start(char_tok: PreTrainedTokenizerFast) -> None:
    record = PreferenceRecord("abcdefghij>", "0123456789abcdef", "fedcba9876543210")
    pair = tokenize_record(record, char_tok, max_length=16, max_prompt_length=4)
    assert char_tok.decode(pair.prompt_ids) == "<s>ij>"
    assert char_tok.decode(pair.chosen_ids) == "0123456789ab"
    assert char_tok.decode(pair.rejected_ids) == "fedcba987654"
    short = tokenize_record(PreferenceRecord("ab>", "0", "1"), char_tok, max_length=10)
    assert char_tok.decode(short.chosen_ids) == "0</s>"


def test_by_default_a_prompt_is_cut_only_as_far_as_its_responses_need(
    char_tok: PreTrainedTokenizerFast,
) -> None:
    # Responses of 2 tokens (EOS included) leave 18 of max_length=20 to the prompt.
    pair = tokenize_record(PreferenceRecord("x" * 15, "a", "b"), char_tok, max_length=20)
    assert len(pair.prompt_ids) == 16  # BOS + 15: not cut
    long = tokenize_record(PreferenceRecord("x" * 15, "a" * 30, "b"), char_tok, max_length=20)
    assert len(long.prompt_ids) == 10  # never below max_length // 2


def test_prompt_longer_than_max_length_is_cut_not_refused(
    char_tok: PreTrainedTokenizerFast,
) -> None:
    # Before: refused as "prompt_too_long"; now cut from its start like any long prompt.
    record = PreferenceRecord("y" * 20 + "x" * 20 + ">", "a", "b", source="d.jsonl", line=3)
    pair = tokenize_record(record, char_tok, max_length=20)
    assert char_tok.decode(pair.prompt_ids) == "<s>" + "x" * 16 + ">"  # 18 = 20 - len("a</s>")
    assert char_tok.decode(pair.chosen_ids) == "a</s>"


def test_max_prompt_length_must_leave_room_for_a_response(
    char_tok: PreTrainedTokenizerFast,
) -> None:
    record = PreferenceRecord("abcdefgh>", "a", "b", source="data/train.jsonl", line=17)
    with pytest.raises(ValueError, match=r"max_prompt_length must be in \[1, max_length - 1"):
        tokenize_record(record, char_tok, max_length=8, max_prompt_length=8)
    pair = tokenize_record(record, char_tok, max_length=8, max_prompt_length=7)
    assert len(pair.prompt_ids) == 7  # one token left: the responses' first
    assert (char_tok.decode(pair.chosen_ids), char_tok.decode(pair.rejected_ids)) == ("a", "b")


def test_bpe_mask_exact_despite_merge_across_boundary(bpe_tok: PreTrainedTokenizerFast) -> None:
    record = PreferenceRecord("Q: hello wor", "ld", "ld is wide")
    joined = bpe_tok(record.prompt + record.chosen, add_special_tokens=False)["input_ids"]
    pair = tokenize_record(record, bpe_tok, max_length=64)
    # The tokenizer merges "world" when it sees the concatenation: a naive split would be off.
    assert joined != list(pair.prompt_ids + pair.chosen_ids[:-1])
    assert bpe_tok.decode(pair.prompt_ids) == "Q: hello wor"
    batch = collate_pairs([pair], pad_token_id=bpe_tok.eos_token_id)
    assert response_texts(batch, bpe_tok) == ["ld<|endoftext|>", "ld is wide<|endoftext|>"]


def test_prompt_without_tokens_is_an_error(bpe_tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(DataValidationError, match=r"<generated>\[5\]: field 'prompt'"):
        tokenize_records(
            [PreferenceRecord("x", "a", "b")] * 5 + [PreferenceRecord("", "a", "b")],
            bpe_tok,
            max_length=16,
        )


# --- collate ----------------------------------------------------------------------------


def test_collate_shapes_padding_and_row_order() -> None:
    pairs = [
        TokenizedPair((1, 5), (6, 2), (7, 8, 9, 2)),
        TokenizedPair((1, 5, 5, 5), (6, 2), (7, 2)),
    ]
    batch = collate_pairs(pairs, pad_token_id=0)
    scored = {"score_positions", "score_labels", "score_sequences", "score_offsets"}
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask", "score_lengths", *scored}
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.bool
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 2, 0, 0],
        [1, 5, 5, 5, 6, 2],
        [1, 5, 7, 8, 9, 2],
        [1, 5, 5, 5, 7, 2],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 4 + [0] * 2, [1] * 6, [1] * 6, [1] * 6]
    assert batch["loss_mask"].int().tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1],
    ]
    # Each response token and the flat position (row * 6 + column) of the hidden state
    # that predicts it: the column before it, in its own row.
    assert batch["score_positions"].tolist() == [1, 2, 9, 10, 13, 14, 15, 16, 21, 22]
    assert batch["score_labels"].tolist() == [6, 2, 6, 2, 7, 8, 9, 2, 7, 2]
    assert batch["score_sequences"].tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 3, 3]
    assert batch["score_offsets"].tolist() == [0, 1, 0, 1, 0, 1, 2, 3, 0, 1]
    assert batch["score_lengths"].tolist() == [2, 2, 4, 2]


def test_collate_rewards_present_and_mixed() -> None:
    pairs = [TokenizedPair((1,), (2,), (3,), 1.0, 0.5), TokenizedPair((1,), (2,), (3,), 0.0, -1)]
    batch = collate_pairs(pairs, pad_token_id=0)
    assert batch["chosen_reward"].dtype == torch.float32
    assert batch["chosen_reward"].tolist() == [1.0, 0.0]
    assert batch["rejected_reward"].tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="rewards"):
        collate_pairs([pairs[0], TokenizedPair((1,), (2,), (3,))], pad_token_id=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), max_length=st.integers(11, 24), batch=st.integers(1, 6))
def test_collate_contract_property(seed: int, max_length: int, batch: int) -> None:
    tok = build_char_tokenizer()
    records = generate_sort_task(batch, seed)
    try:
        pairs = [tokenize_record(r, tok, max_length) for r in records]
    except DataValidationError:  # cut to the same tokens: refused, rightly (tested elsewhere)
        reject()
    out = collate_pairs(pairs, tok.pad_token_id)
    responses = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    assert out["input_ids"].shape == (2 * batch, out["input_ids"].shape[1])
    assert out["input_ids"].shape[1] <= max_length
    assert out["loss_mask"].sum(1).tolist() == [len(r) for r in responses]
    assert not out["loss_mask"][:, 0].any()
    assert (out["loss_mask"] <= out["attention_mask"].bool()).all()
    for row, response in enumerate(responses):
        assert out["input_ids"][row][out["loss_mask"][row]].tolist() == list(response)


# --- datamodule -------------------------------------------------------------------------


def assert_contract(batch: dict[str, torch.Tensor], pairs: int, rewards: bool) -> None:
    rows, width = batch["input_ids"].shape
    assert rows == 2 * pairs
    assert batch["attention_mask"].shape == batch["loss_mask"].shape == (rows, width)
    assert batch["input_ids"].dtype == torch.long and batch["loss_mask"].dtype == torch.bool
    assert batch["attention_mask"][:, 0].all() and not batch["loss_mask"][:, 0].any()
    assert batch["attention_mask"].sum(1).max() == width
    assert ("chosen_reward" in batch) is rewards and ("rejected_reward" in batch) is rewards


def test_datamodule_default_task(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter()
    original = token_cache_module.encode_records

    def counting(*args: object, **kwargs: object) -> list[object]:
        calls["tokenize"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(token_cache_module, "encode_records", counting)
    dm = PreferenceDataModule(
        source=DataSource(num_train=40, num_val=10), batches=BatchSettings(batch_size=8)
    )
    assert len(dm.tokenizer) == len(build_char_tokenizer())
    dm.setup("fit")
    dm.setup("validate")
    assert calls["tokenize"] == 2  # train + val, once
    assert (len(dm.train_pairs), len(dm.val_pairs)) == (40, 10)
    batch = next(iter(dm.train_dataloader()))
    assert_contract(batch, 8, rewards=True)  # the sort task's verifiable rewards, for RPO
    texts = response_texts(batch, dm.tokenizer)
    assert all(t.endswith("</s>") for t in texts)
    assert sorted(texts[0][:-4]) == list(texts[0][:-4])  # chosen rows come first
    val = list(dm.val_dataloader())
    assert [b["input_ids"].shape[0] for b in val] == [16, 4]
    assert dm.has_rewards
    assert [b["pair_index"].tolist() for b in val] == [list(range(8)), [8, 9]]
    assert batch["pair_index"].dtype == torch.long and batch["pair_index"].shape == (8,)
    for row, index in enumerate(batch["pair_index"].tolist()):
        pair = dm.train_pairs[index]
        assert batch["input_ids"][row, : len(pair.prompt_ids)].tolist() == list(pair.prompt_ids)
    assert torch.equal(batch["chosen_reward"], torch.ones(8))
    assert (batch["rejected_reward"] < 1).all()


def test_datamodule_shuffle_is_seeded() -> None:
    def first_batch(seed: int) -> torch.Tensor:
        dm = PreferenceDataModule(
            seed=seed,
            source=DataSource(num_train=64, num_val=8),
            batches=BatchSettings(batch_size=8),
        )
        dm.setup()
        return next(iter(dm.train_dataloader()))["input_ids"]

    assert torch.equal(first_batch(1), first_batch(1))
    val_a = PreferenceDataModule(
        source=DataSource(num_train=64, num_val=8), batches=BatchSettings(batch_size=8)
    )
    val_a.setup()
    first_val = next(iter(val_a.val_dataloader()))["input_ids"]
    expected = collate_pairs(val_a.val_pairs, val_a.tokenizer.pad_token_id)["input_ids"]
    assert torch.equal(first_val, expected)


def test_datamodule_require_fields_names_file_line_and_fields(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [pair_row(i) for i in range(5)])
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(train), val_file=str(train)),
        batches=BatchSettings(batch_size=2),
    )
    dm.setup()
    with pytest.raises(DataValidationError) as info:
        dm.require_fields(REWARD_FIELDS, reason="rpo_bwd_kl needs rewards")
    message = str(info.value)
    assert message.startswith(f"{train}:1: missing fields 'chosen_reward', 'rejected_reward'")
    assert message.endswith("(rpo_bwd_kl needs rewards)")
    dm.require_fields(("prompt_ids",))
    with pytest.raises(ValueError, match="unknown"):
        dm.require_fields(("score",))


def test_datamodule_with_rewards_and_holdout(tmp_path: Path) -> None:
    rows = [pair_row(i % 10, rewards=True) for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(train), val_fraction=0.2),
        batches=BatchSettings(batch_size=4),
    )
    dm.setup()
    assert dm.has_rewards
    dm.require_fields(REWARD_FIELDS)
    assert (len(dm.train_pairs), len(dm.val_pairs)) == (24, 6)
    train_prompts = {p.prompt_ids for p in dm.train_pairs}
    assert not train_prompts & {p.prompt_ids for p in dm.val_pairs}
    assert_contract(next(iter(dm.train_dataloader())), 4, rewards=True)
    assert_contract(next(iter(dm.val_dataloader())), 4, rewards=True)


def test_split_by_prompt_needs_two_prompts(tmp_path: Path) -> None:
    records = read_jsonl(write_jsonl(tmp_path / "one.jsonl", [pair_row(0)] * 3))
    with pytest.raises(DataValidationError, match=r"one\.jsonl"):
        split_by_prompt(records, 0.5, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_prompt(records, 1.0, seed=0)


def test_datamodule_local_tokenizer_dir_and_pad_fallback(
    tmp_path: Path, bpe_tok: PreTrainedTokenizerFast
) -> None:
    bpe_tok.save_pretrained(tmp_path / "tok")
    dm = PreferenceDataModule(
        tokenizer=str(tmp_path / "tok"), source=DataSource(num_train=8, num_val=4)
    )
    assert dm.tokenizer.pad_token_id == dm.tokenizer.eos_token_id
    assert dm.tokenizer.get_vocab() == bpe_tok.get_vocab()
    batch = next(iter(dm.val_dataloader()))  # runs setup on demand
    assert_contract(batch, 4, rewards=True)


def test_datamodule_rejects_val_file_without_train_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_file"):
        PreferenceDataModule(source=DataSource(val_file=str(tmp_path / "val.jsonl")))
