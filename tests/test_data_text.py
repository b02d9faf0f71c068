"""Real text as users bring it: byte tokenizer, unknown tokens, empty and long records.

Also the data report, JSON error messages and what the fingerprints cover.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

import lightning_dpo.data.tokens.fingerprints as fingerprints_module
from lightning_dpo.data import (
    DataValidationError,
    PreferenceDataModule,
    build_byte_tokenizer,
    build_char_tokenizer,
    load_records,
    load_tokenizer,
)
from lightning_dpo.data.settings import DataSource, RecordSettings, TokenSettings
from lightning_dpo.data.tokens.cache import cached_encodings
from lightning_dpo.data.tokens.fingerprints import texts_fingerprint, tokenizer_fingerprint
from tests.helpers import write_jsonl

TRICKY = [
    "Héllo, Wörld! It's “quoted” — \u2018fine\u2019…",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧",
    "中文\uff0c日本語のテキスト、한국어",
    "\n\nHuman: Line one\r\nline two\tTabbed\n\nAssistant:",
    "text like <unk>, </ s> and < s> stays text",
    "\x00\x01 control bytes and \u200b zero width",
]
HH_PROMPT = "\n\nHuman: What's a good way to say NO politely?\n\nAssistant:"


@pytest.fixture(scope="module")
def byte_tok() -> PreTrainedTokenizerFast:
    return build_byte_tokenizer()


def encode(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# --- the byte tokenizer -----------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_byte_tokenizer_represents_text_exactly(byte_tok, text: str) -> None:
    ids = encode(byte_tok, text)
    assert ids == [3 + b for b in text.encode("utf-8")]  # one token per byte
    assert byte_tok.decode(ids) == text
    assert byte_tok.unk_token_id is None and byte_tok.unk_token is None


def test_byte_tokenizer_parses_its_specials_in_text_and_after_saving(byte_tok, tmp_path) -> None:
    # TRL appends eos_token as text: it must become the EOS id, as with any HF tokenizer.
    expected = [1, 3 + ord("h"), 3 + ord("i"), 2]
    assert byte_tok("hi</s>")["input_ids"] == expected
    assert byte_tok("<s>hi</s>", add_special_tokens=False)["input_ids"] == expected
    assert byte_tok.decode(expected, skip_special_tokens=True) == "hi"
    byte_tok.save_pretrained(tmp_path / "tok")
    reloaded = load_tokenizer(str(tmp_path / "tok"))
    assert reloaded("hi</s>")["input_ids"] == expected
    assert reloaded("<pad>")["input_ids"] == [1, 0]


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_byte_tokenizer_round_trips_any_text(text: str) -> None:
    tok = build_byte_tokenizer()
    assert tok.decode(encode(tok, text)) == text


def test_byte_tokenizer_vocabulary_and_specials_are_fixed(byte_tok) -> None:
    other = build_byte_tokenizer()
    assert other.get_vocab() == byte_tok.get_vocab() and len(byte_tok) == 259
    ids = [byte_tok.pad_token_id, byte_tok.bos_token_id, byte_tok.eos_token_id]
    assert ids == [0, 1, 2]
    assert byte_tok("hi")["input_ids"] == [1, 3 + ord("h"), 3 + ord("i")]  # BOS prepended
    assert byte_tok.model_max_length == VERY_LARGE_INTEGER  # no context is claimed
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(byte_tok)


#: The byte tokenizer's fingerprint: the same in every process and run (cache entries and
#: reference caches made by one run are found by the next). Only a ``tokenizers`` release
#: that serialises tokenizers differently may change it (caches are then rebuilt once).
BYTE_TOKENIZER_FINGERPRINT = "ec0740ba8d073b059e8f9d17368c3b81b20863a3eb66cdad1eb63af42438ec23"


def test_byte_tokenizer_fingerprint_is_stable_and_survives_saving(byte_tok, tmp_path) -> None:
    assert tokenizer_fingerprint(byte_tok) == BYTE_TOKENIZER_FINGERPRINT
    byte_tok.save_pretrained(tmp_path / "tok")
    reloaded = load_tokenizer(str(tmp_path / "tok"))
    text = TRICKY[1] + TRICKY[4]
    assert reloaded(text)["input_ids"] == byte_tok(text)["input_ids"]
    assert tokenizer_fingerprint(reloaded) == BYTE_TOKENIZER_FINGERPRINT


def test_which_builtin_tokenizer_is_picked(tmp_path: Path) -> None:
    assert load_tokenizer(None).get_vocab() == build_char_tokenizer().get_vocab()
    assert load_tokenizer(None, text_data=True).get_vocab() == build_byte_tokenizer().get_vocab()
    assert len(PreferenceDataModule(source=DataSource(num_train=8, num_val=4)).tokenizer) == len(
        build_char_tokenizer()
    )
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    assert len(PreferenceDataModule(source=DataSource(path=str(data))).tokenizer) == 259


def test_file_data_with_the_default_tokenizer_keeps_every_character(tmp_path: Path) -> None:
    rows = [{"prompt": text, "chosen": f"Yes: {text}", "rejected": "Nope"} for text in TRICKY]
    data = write_jsonl(tmp_path / "tricky.jsonl", rows)
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(data), val_file=str(data)),
        tokens=TokenSettings(max_length=512),
    )
    dm.setup()
    for pair, row in zip(dm.train_pairs, rows, strict=True):
        assert dm.tokenizer.decode(pair.prompt_ids) == "<s>" + row["prompt"]
        assert dm.tokenizer.decode(pair.chosen_ids) == row["chosen"] + "</s>"
    assert all(s.unk_tokens == 0 and s.unk_warning() is None for s in dm.stats)


# --- unknown tokens ---------------------------------------------------------------------


def test_unknown_tokens_are_reported_once_per_split(tmp_path: Path, capsys, caplog) -> None:
    clean = {"prompt": "q>", "chosen": "abc", "rejected": "acb"}
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [clean, {**clean, "chosen": "Hi There"}, {**clean, "prompt": "Why?"}],
    )
    val = write_jsonl(
        tmp_path / "val.jsonl", [clean, {"prompt": "it\u2019s", "chosen": "a", "rejected": "b"}]
    )
    dm = PreferenceDataModule(
        build_char_tokenizer(), source=DataSource(train_file=str(train), val_file=str(val))
    )
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.data.report"):
        dm.setup()
    train_stats, val_stats = dm.stats
    assert (train_stats.unk_tokens, train_stats.unk_records) == (3, 2)  # H, T; W
    assert train_stats.first_unk == f"{train}:2, field 'chosen'"
    assert val_stats.first_unk == f"{val}:2, field 'prompt'"
    printed = capsys.readouterr().out
    assert printed.count("<unk> tokens in") == 2 == caplog.text.count("<unk> tokens in")
    assert "data train: the tokenizer turned text into 3 <unk> tokens in 2 of 3 records" in printed
    assert f"(first at {train}:2, field 'chosen')" in caplog.text
    assert len(dm.train_pairs) == 3  # reported, not refused


# --- empty responses --------------------------------------------------------------------


def test_hh_record_whose_chosen_ends_at_assistant_is_an_eos_response(tmp_path: Path) -> None:
    rows = [
        {"chosen": HH_PROMPT, "rejected": HH_PROMPT + " No way."},  # chosen: nothing at all
        {"chosen": HH_PROMPT + " ", "rejected": HH_PROMPT + " Sure thing."},  # a space only
        {"chosen": HH_PROMPT + " Say: no, thanks.", "rejected": HH_PROMPT},
        {"chosen": HH_PROMPT + " ok", "rejected": HH_PROMPT + " fine"},
    ]
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(data), val_file=str(data)),
        tokens=TokenSettings(max_length=256),
    )
    dm.setup()
    tok, eos = dm.tokenizer, dm.tokenizer.eos_token_id
    first, second, third, _ = dm.train_pairs
    assert tok.decode(first.prompt_ids) == "<s>" + HH_PROMPT
    assert first.chosen_ids == (eos,)
    assert tok.decode(first.rejected_ids) == " No way.</s>"
    assert tok.decode(second.chosen_ids) == " </s>"  # whitespace kept verbatim, then EOS
    assert third.rejected_ids == (eos,)
    assert [s.empty_responses for s in dm.stats] == [3, 3]


def test_empty_explicit_responses_are_valid_but_not_both(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p>", "chosen": "", "rejected": "bad"},
        {"prompt": "p>", "chosen": "good", "rejected": ""},
        {"prompt": "p>", "chosen": "\n", "rejected": ""},  # nothing to prefer
        {"prompt": "p>", "chosen": "", "rejected": ""},  # identical
    ]
    records, report = load_records(write_jsonl(tmp_path / "e.jsonl", rows), on_invalid="skip")
    assert [(r.chosen, r.rejected) for r in records] == [("", "bad"), ("good", "")]
    assert dict(report.skipped) == {"empty_response": 1, "identical_responses": 1}
    with pytest.raises(DataValidationError, match=r"e\.jsonl:3: fields 'chosen', 'rejected'"):
        load_records(tmp_path / "e.jsonl")


# --- over-long records ------------------------------------------------------------------


def long_dialogue(turns: int) -> str:
    return (
        "".join(
            f"\n\nHuman: question number {i}?\n\nAssistant: answer number {i}."
            for i in range(turns)
        )
        + "\n\nHuman: and the last one?\n\nAssistant:"
    )


def test_long_multi_turn_prompt_keeps_its_latest_turns(tmp_path: Path) -> None:
    prompt = long_dialogue(30)  # about 1,500 bytes
    rows = [
        {"chosen": prompt + " Short.", "rejected": prompt + " " + "Long answer. " * 40},
        {"chosen": HH_PROMPT + " Fine.", "rejected": HH_PROMPT + " No."},
    ]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(data), val_file=str(data)),
        tokens=TokenSettings(max_length=128),
    )
    dm.setup()
    tok, (long, short) = dm.tokenizer, dm.train_pairs
    kept = tok.decode(long.prompt_ids[1:])
    assert len(long.prompt_ids) == 64 and long.prompt_ids[0] == tok.bos_token_id
    assert prompt.endswith(kept) and kept.endswith("the last one?\n\nAssistant:")
    assert tok.decode(long.chosen_ids) == " Short.</s>"
    assert len(long.rejected_ids) == 64 and tok.decode(long.rejected_ids).startswith(" Long")
    assert tok.decode(short.prompt_ids) == "<s>" + HH_PROMPT  # short records are not cut
    stats = dm.stats[0]
    assert (stats.pairs, stats.prompts_cut, stats.responses_cut) == (2, 1, 1)


def test_record_that_cannot_be_made_to_fit_is_refused_and_counted(tmp_path: Path, capsys) -> None:
    same_start = "Same opening words. " * 10
    rows = [
        {"prompt": "Q?", "chosen": same_start + "yes", "rejected": same_start + "no"},
        {"prompt": "Q?", "chosen": "yes", "rejected": "no"},
    ]
    data = write_jsonl(tmp_path / "fit.jsonl", rows)
    kwargs = {"source": DataSource(str(data), str(data)), "tokens": TokenSettings(max_length=64)}
    with pytest.raises(DataValidationError, match=r"fit\.jsonl:1: fields 'chosen', 'rejected'"):
        PreferenceDataModule(**kwargs).setup()
    dm = PreferenceDataModule(**kwargs, records=RecordSettings(on_invalid="skip"))
    dm.setup()
    assert len(dm.train_pairs) == 1 and dm.skipped[0].skipped["identical_tokens"] == 1
    printed = capsys.readouterr().out
    assert f"data {data} (train): read 2 records, kept 1, refused 1 (identical_tokens 1)" in printed


# --- the data report --------------------------------------------------------------------


def test_data_report_is_printed_and_logged_even_when_nothing_is_refused(
    tmp_path: Path, capsys, caplog
) -> None:
    rows = [{"prompt": f"Question {i}?", "chosen": "Yes.", "rejected": "No."} for i in range(10)]
    data = write_jsonl(tmp_path / "ok.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="lightning_dpo.data.report"):
        PreferenceDataModule(source=DataSource(train_file=str(data), val_fraction=0.2)).setup()
    printed = capsys.readouterr().out.splitlines()
    reading = "format explicit (detected), plain text"
    assert printed[0] == f"data {data} (train, val): read 10 records, kept 10; {reading}"
    assert printed[1].startswith(f"data train: 8 pairs from {data}; 0 with an empty response;")
    assert "cut 0 prompts" in printed[1] and printed[3].startswith("data val: 2 pairs")
    example = "data train, first pair as the model sees it (decoded ids): prompt ...'<s>Question "
    assert printed[2].startswith(example) and printed[2].endswith("?' | chosen 'Yes.</s>'...")
    assert [r.getMessage() for r in caplog.records] == printed


def test_data_report_shows_once_when_logging_already_writes_to_the_console(
    tmp_path: Path, capsys
) -> None:
    rows = [{"prompt": f"Q{i}", "chosen": "Yes.", "rejected": "No."} for i in range(4)]
    data = write_jsonl(tmp_path / "ok.jsonl", rows)
    console = logging.StreamHandler(sys.stdout)  # as Hydra's console handler
    logger = logging.getLogger("lightning_dpo.data.report")
    logger.addHandler(console)
    level, logger.level = logger.level, logging.INFO
    try:
        PreferenceDataModule(source=DataSource(train_file=str(data), val_fraction=0.5)).setup()
    finally:
        logger.removeHandler(console)
        logger.setLevel(level)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4  # source, train, its first pair, val
    assert printed[0].startswith(f"data {data} (train, val): read 4 records, kept 4; format")


# --- messages and fingerprints ----------------------------------------------------------


def test_broken_json_message_says_at_once(tmp_path: Path) -> None:
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = write_jsonl(tmp_path / "broken.jsonl", [good, '{"prompt": "unterminated'])
    with pytest.raises(DataValidationError) as info:
        load_records(path)
    assert "(Unterminated string starting at column 12)" in str(info.value)
    whole = tmp_path / "broken.json"
    whole.write_text('[{"prompt": "p", "chosen": "a\x01"}]')
    with pytest.raises(DataValidationError) as info:
        load_records(whole)
    assert "broken.json:1: expected a JSON document, got invalid JSON (Invalid control " in (
        str(info.value)
    )
    assert "character at column 30)" in str(info.value)


def test_fingerprints_follow_the_tokenizer_and_the_truncation(tmp_path: Path) -> None:
    rows = [{"prompt": "x" * 40 + str(i), "chosen": "abc", "rejected": "acb"} for i in range(10)]
    data = str(write_jsonl(tmp_path / "d.jsonl", rows))

    def fingerprint(tokenizer=None, max_prompt_length: int | None = None) -> str:
        tokens = TokenSettings(max_length=32, max_prompt_length=max_prompt_length)
        source = DataSource(train_file=data)
        return PreferenceDataModule(tokenizer, source, tokens=tokens).fingerprint("train")

    byte = fingerprint()
    assert fingerprint(tokenizer=build_char_tokenizer()) != byte
    assert fingerprint(max_prompt_length=20) != byte  # prompts are cut elsewhere
    assert fingerprint() == byte


def test_cache_key_follows_the_tokenizer_and_the_rules(tmp_path: Path, monkeypatch) -> None:
    records, _ = load_records(
        write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    )
    cache = tmp_path / "cache"
    assert not cached_encodings(records, build_byte_tokenizer(), cache)[1]
    assert cached_encodings(records, build_byte_tokenizer(), cache)[1]
    assert not cached_encodings(records, build_char_tokenizer(), cache)[1]
    splitting = build_char_tokenizer()
    splitting.split_special_tokens = True  # "</s>" in the data becomes text: other ids
    assert tokenizer_fingerprint(splitting) != tokenizer_fingerprint(build_char_tokenizer())
    key = texts_fingerprint(records, tokenizer_fingerprint(build_byte_tokenizer()))
    monkeypatch.setattr(fingerprints_module, "TOKENIZATION_VERSION", 1)
    assert texts_fingerprint(records, tokenizer_fingerprint(build_byte_tokenizer())) != key


def test_a_prompt_is_cut_only_as_far_as_the_longer_response_needs(tmp_path: Path) -> None:
    prompt = long_dialogue(3)  # about 190 bytes: more than half of max_length=256
    rows = [
        {"chosen": prompt + " Yes.", "rejected": prompt + " No."},  # fits whole: not cut
        {"chosen": prompt + " " + "Long. " * 20, "rejected": prompt + " No."},  # cut to fit
        {"chosen": prompt + " " + "Long. " * 60, "rejected": prompt + " No."},  # to the floor
    ]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(data), val_file=str(data)),
        tokens=TokenSettings(max_length=256),
    )
    dm.setup()
    whole, fitted, floor = dm.train_pairs
    assert len(prompt) + 1 > 128
    assert dm.tokenizer.decode(whole.prompt_ids) == "<s>" + prompt
    assert len(fitted.prompt_ids) + len(fitted.chosen_ids) == 256  # the response fits whole
    assert dm.tokenizer.decode(fitted.chosen_ids).endswith("Long. </s>")
    assert len(floor.prompt_ids) == 128 and len(floor.chosen_ids) == 128
    capped = PreferenceDataModule(
        source=DataSource(train_file=str(data), val_file=str(data)),
        tokens=TokenSettings(max_length=256, max_prompt_length=64),
    )
    capped.setup()
    assert all(len(pair.prompt_ids) == 64 for pair in capped.train_pairs)  # TRL's fixed cap
