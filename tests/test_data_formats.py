"""Record formats, sources, validation of bad records and skip mode (lightning_dpo.data)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from lightning_dpo.data import DataValidationError, PreferenceDataModule, build_char_tokenizer
from lightning_dpo.data.records.formats import FormatOptions
from lightning_dpo.data.records.reading import RewardDefaults, load_records
from lightning_dpo.data.settings import DataSource, RecordSettings, TokenSettings
from tests.helpers import CHAT_TEMPLATE, write_jsonl

HH = "\n\nHuman: sort 3 1 2\n\nAssistant:"


def chat_tok():
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def explicit_rows(n: int = 4) -> list[dict[str, object]]:
    return [{"prompt": f"q{i}>", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(n)]


def texts(records) -> list[tuple[str, str, str]]:
    return [(r.prompt, r.chosen, r.rejected) for r in records]


EXPECTED = [(f"q{i}>", f"yes {i}", f"no {i}") for i in range(4)]

# --- formats ----------------------------------------------------------------------------


def test_implicit_prompt_is_cut_at_the_last_shared_turn_boundary(tmp_path: Path) -> None:
    rows = [
        {"chosen": HH + " Sure, 1 2 3.", "rejected": HH + " Sure, 3 2 1."},
        {
            "chosen": HH + " ok\n\nHuman: again\n\nAssistant: 1 2",
            "rejected": HH + " ok\n\nHuman: again\n\nAssistant: no",
        },
    ]
    records, _ = load_records(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert texts(records)[0] == (HH, " Sure, 1 2 3.", " Sure, 3 2 1.")  # not mid-word "1 2 3."
    prompt, chosen, rejected = texts(records)[1]
    assert prompt == HH + " ok\n\nHuman: again\n\nAssistant:"
    assert (chosen, rejected) == (" 1 2", " no")


def test_implicit_without_shared_turn_boundary_names_line_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "abc", "rejected": "abd"}])
    with pytest.raises(DataValidationError) as info:
        load_records(path)
    assert str(info.value).startswith(f"{path}:1: fields 'chosen', 'rejected': expected")
    assert "turn marker" in str(info.value)


def test_conversational_with_prompt_and_implicit_prompt(tmp_path: Path) -> None:
    user = {"role": "user", "content": "hi"}
    rows = [
        {
            "prompt": [user],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        },
        {
            "chosen": [user, {"role": "assistant", "content": "yes"}],
            "rejected": [user, {"role": "assistant", "content": "no"}],
        },
    ]
    records, _ = load_records(write_jsonl(tmp_path / "chat.jsonl", rows), chat_tok())
    assert texts(records) == [("<user>hi;<assistant>", "yes;", "no;")] * 2


def test_conversational_without_chat_template_is_a_clear_error(tmp_path: Path) -> None:
    rows = [{"chosen": [{"role": "assistant", "content": "a"}], "rejected": []}]
    with pytest.raises(ValueError, match="chat template"):
        load_records(write_jsonl(tmp_path / "c.jsonl", rows), build_char_tokenizer())


def test_conversational_bad_message_names_field(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "user"}],
            "chosen": [{"role": "assistant", "content": "x"}],
            "rejected": [{"role": "assistant", "content": "y"}],
        }
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(
        DataValidationError, match=r"c\.jsonl:1: field 'prompt': expected message 0"
    ):
        load_records(path, chat_tok())


def test_column_mapping_and_reward_defaults(tmp_path: Path) -> None:
    rows = [{"question": "q>", "response_j": "good", "response_k": "bad", "score_j": 2}]
    rows.append({"question": "r>", "response_j": "fine", "response_k": "poor"})
    columns = {
        "prompt": "question",
        "chosen": "response_j",
        "rejected": "response_k",
        "chosen_reward": "score_j",
    }
    path = write_jsonl(tmp_path / "se.jsonl", rows)
    records, _ = load_records(
        path, options=FormatOptions(columns=columns), rewards=RewardDefaults(1.0, 0.0)
    )
    assert texts(records) == [("q>", "good", "bad"), ("r>", "fine", "poor")]
    assert [(r.chosen_reward, r.rejected_reward) for r in records] == [(2.0, 0.0), (1.0, 0.0)]
    with pytest.raises(DataValidationError, match=r"se\.jsonl:1: expected the fields of one"):
        load_records(path)  # without the mapping: no format has these columns
    with pytest.raises(ValueError, match=r"valid fields: \('prompt'"):
        FormatOptions(columns={"question": "prompt"})
    with pytest.raises(ValueError, match="format must be one of"):
        FormatOptions(format="pairs")


# --- sources ----------------------------------------------------------------------------


def write_sources(tmp_path: Path) -> dict[str, Path]:
    rows = explicit_rows()
    paths = {"jsonl": write_jsonl(tmp_path / "d.jsonl", rows)}
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    paths["jsonl.gz"] = tmp_path / "d.jsonl.gz"
    paths["json"] = tmp_path / "d.json"
    paths["json"].write_text(json.dumps(rows, indent=2))
    paths["json_columns"] = tmp_path / "c.json"
    paths["json_columns"].write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    paths["parquet"] = tmp_path / "d.parquet"
    folder = tmp_path / "folder"
    write_jsonl(folder / "a.jsonl" if folder.mkdir() is None else folder, rows[:2])
    pq.write_table(pa.Table.from_pylist(rows[2:]), folder / "b.parquet")
    paths["folder"] = folder
    Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    paths["save_to_disk"] = tmp_path / "saved"
    DatasetDict(
        {"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])}
    ).save_to_disk(tmp_path / "dict")
    paths["dataset_dict"] = tmp_path / "dict"
    return paths


SOURCES = [
    "jsonl",
    "jsonl.gz",
    "json",
    "json_columns",
    "parquet",
    "folder",
    "save_to_disk",
    "dataset_dict",
]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_reads_the_same_records(tmp_path: Path, kind: str) -> None:
    records, report = load_records(write_sources(tmp_path)[kind])
    assert texts(records) == EXPECTED
    assert (report.total, report.kept) == (4, 4)


def test_dataset_dict_split_and_separate_val_file(tmp_path: Path) -> None:
    paths = write_sources(tmp_path)
    dm = PreferenceDataModule(
        source=DataSource(
            train_file=str(paths["dataset_dict"]), val_file=str(paths["dataset_dict"])
        )
    )
    dm.setup()
    assert (len(dm.train_pairs), len(dm.val_pairs)) == (4, 1)
    with pytest.raises(
        DataValidationError, match=r"expected a split named 'dev', got splits \['test', 'train'\]"
    ):
        load_records(paths["dataset_dict"], split="dev")


def test_missing_unsupported_and_uncached_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="expected an existing file or folder"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataValidationError, match=r"data\.csv: expected a file ending in one of"):
        load_records(tmp_path / "data.csv")
    with pytest.raises(DataValidationError, match="nothing is downloaded"):
        load_records("no-such-owner-xyz/no-such-dataset")


# --- validation -------------------------------------------------------------------------

GOOD = {"prompt": "p>", "chosen": "ab", "rejected": "ba"}
BAD = {
    "invalid_json": ('{"prompt": "p", "chosen": ', None),
    "missing_field": ({"prompt": "p", "rejected": "b"}, "field 'chosen'"),
    "wrong_type": ({"prompt": "p", "chosen": 42, "rejected": "b"}, "field 'chosen'"),
    "empty_response": ({"prompt": "p", "chosen": " ", "rejected": ""}, "fields 'chosen', 'rej"),
    "identical_responses": ({"prompt": "p", "chosen": "a", "rejected": "a"}, "field 'rejected'"),
    "bad_reward": (
        {**GOOD, "chosen_reward": "high", "rejected_reward": 0},
        "field 'chosen_reward'",
    ),
    "identical_tokens": (
        {**GOOD, "chosen": "x" * 40 + "a", "rejected": "x" * 40 + "b"},
        "fields 'chosen', 'rejected'",
    ),
}


# Parquet columns are typed: they cannot hold a broken JSON line or a number among strings.
CASES = [(r, "jsonl") for r in sorted(BAD)]
CASES += [(r, "parquet") for r in sorted(BAD) if r not in ("invalid_json", "wrong_type")]


@pytest.mark.parametrize(("reason", "suffix"), CASES)
def test_bad_record_error_names_file_line_and_field(
    tmp_path: Path, reason: str, suffix: str
) -> None:
    bad, field = BAD[reason]
    if suffix == "parquet":
        path = tmp_path / "bad.parquet"
        schema = pa.unify_schemas([pa.Table.from_pylist([row]).schema for row in (GOOD, bad)])
        pq.write_table(pa.Table.from_pylist([GOOD, bad, GOOD], schema=schema), path)
        where = f"{path}[1]: "  # row 1
    else:
        path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "", bad, GOOD])
        where = f"{path}:3: "
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(path), val_file=str(path)),
        tokens=TokenSettings(max_length=32),
    )
    with pytest.raises(DataValidationError) as info:
        dm.setup()
    message = str(info.value)
    assert message.startswith(where) and "expected" in message
    assert field is None or field in message


def test_skip_mode_counts_every_reason_prints_and_logs(tmp_path: Path, capsys, caplog) -> None:
    rows = [GOOD, *[bad for bad, _ in BAD.values()], {**GOOD, "chosen": "abc"}, "[1, 2]"]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", [GOOD])
    dm = PreferenceDataModule(
        source=DataSource(train_file=str(path), val_file=str(val)),
        tokens=TokenSettings(max_length=32),
        records=RecordSettings(on_invalid="skip"),
    )
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.data.report"):
        dm.setup()
    assert len(dm.train_pairs) == 2 and len(dm.val_pairs) == 1
    assert [p.index for p in dm.train_pairs] == [0, 1]  # pair_index counts kept pairs only
    train_report, val_report = dm.skipped
    assert dict(train_report.skipped) == {**dict.fromkeys(BAD, 1), "not_an_object": 1}
    assert (train_report.total, train_report.kept) == (10, 2)
    assert not val_report.skipped
    printed = capsys.readouterr().out
    assert f"{path} (train): read 10 records, kept 2, refused 8 (bad_reward 1, empty_res" in printed
    # nothing refused there
    assert f"data {val} (val): read 1 record, kept 1; format explicit (detected)" in printed
    assert "identical_tokens 1" in caplog.text
    assert str(val) not in caplog.text  # a source that refused nothing is not a warning


def test_rewards_on_some_records_only(tmp_path: Path) -> None:
    rows = [{**GOOD, "chosen_reward": 1, "rejected_reward": 0}, GOOD, {**GOOD, "chosen_reward": 1}]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_records(path)
    assert str(info.value).startswith(f"{path}:3: field 'rejected_reward': expected a number")
    records, report = load_records(path, on_invalid="skip")
    assert len(records) == 1 and dict(report.skipped) == {
        "bad_reward": 1,
        "inconsistent_rewards": 1,
    }
