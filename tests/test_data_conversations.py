"""ShareGPT, OpenAI, whole conversations and hh dialogues through a ChatML chat template.

Every expected id list is worked out by hand (:func:`~tests.helpers.chatml` writes the
text, :func:`~tests.helpers.chatml_ids` maps it to ids without the tokenizer's encoder).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lightning_dpo.data import DataValidationError, PreferenceDataModule
from lightning_dpo.data.records.formats import FormatOptions
from lightning_dpo.data.records.reading import load_records
from lightning_dpo.data.settings import DataSource, RecordSettings, TokenSettings
from tests.helpers import chatml, chatml_ids, chatml_tokenizer, write_jsonl

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Capital of France?"}
CHOSEN = {"role": "assistant", "content": "Paris."}
REJECTED = {"role": "assistant", "content": "Lyon, I think."}


@pytest.fixture(scope="module")
def tok():
    return chatml_tokenizer()


def pairs(tok, path: Path, records: RecordSettings | None = None) -> list:
    """The pairs the data module builds from ``path`` (all of them: it is its own val file)."""
    datamodule = PreferenceDataModule(
        tokenizer=tok,
        records=records,
        source=DataSource(train_file=str(path), val_file=str(path)),
        tokens=TokenSettings(max_length=512),
    )
    datamodule.setup()
    return datamodule.train_pairs


def expected_ids(tok, prompt: list[dict], chosen: dict, rejected: dict) -> tuple[list, ...]:
    """Prompt with the generation prompt; each response its turn, end-of-turn included."""
    return (
        chatml_ids(tok, chatml(prompt, generation_prompt=True)),
        chatml_ids(tok, f"{chosen['content']}<|im_end|>\n"),
        chatml_ids(tok, f"{rejected['content']}<|im_end|>\n"),
    )


def ids(pair) -> tuple[list, ...]:
    return list(pair.prompt_ids), list(pair.chosen_ids), list(pair.rejected_ids)


def sharegpt(turn, system_field: bool, response_spelling: str) -> dict:
    """One ShareGPT record: turns in ``turn``'s spelling, the responses as asked."""
    responses = {"chosen": turn(CHOSEN), "rejected": turn(REJECTED)}
    if response_spelling == "list":
        responses = {key: [value] for key, value in responses.items()}
    elif response_spelling == "string":
        responses = {"chosen": CHOSEN["content"], "rejected": REJECTED["content"]}
    if system_field:
        return {"system": SYSTEM["content"], "conversations": [turn(USER)], **responses}
    return {"conversations": [turn(SYSTEM), turn(USER)], **responses}


def from_value(message: dict) -> dict:
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return {"from": names[message["role"]], "value": message["content"]}


@pytest.mark.parametrize("response_spelling", ["dict", "list", "string"])
@pytest.mark.parametrize("system_field", [True, False])
@pytest.mark.parametrize("spelling", ["from_value", "role_content"])
def test_sharegpt_every_spelling_gives_the_hand_rendered_ids(
    tmp_path, tok, spelling, system_field, response_spelling
):
    turn = from_value if spelling == "from_value" else dict
    path = write_jsonl(tmp_path / "s.jsonl", [sharegpt(turn, system_field, response_spelling)])
    (pair,) = pairs(tok, path)
    assert ids(pair) == expected_ids(tok, [SYSTEM, USER], CHOSEN, REJECTED)


def test_sharegpt_multi_turn_history_under_messages(tmp_path, tok):
    history = [
        USER,
        {"role": "assistant", "content": "Paris?"},
        {"role": "user", "content": "Sure?"},
    ]
    row = {"messages": history, "chosen": CHOSEN, "rejected": REJECTED}
    (pair,) = pairs(tok, write_jsonl(tmp_path / "m.jsonl", [row]))
    assert ids(pair) == expected_ids(tok, history, CHOSEN, REJECTED)


def openai_row(**input_extra) -> dict:
    return {
        "input": {"messages": [SYSTEM, USER], **input_extra},
        "preferred_output": [CHOSEN],
        "non_preferred_output": [REJECTED],
    }


def test_openai_preference_file_gives_the_hand_rendered_ids(tmp_path, tok, caplog):
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    rows = [openai_row(tools=tools), openai_row(tools=tools), openai_row()]
    with caplog.at_level(logging.WARNING):
        built = pairs(tok, write_jsonl(tmp_path / "o.jsonl", rows))
    assert ids(built[0]) == expected_ids(tok, [SYSTEM, USER], CHOSEN, REJECTED)
    warnings = [r.getMessage() for r in caplog.records if "input.tools" in r.getMessage()]
    assert len(warnings) == 2  # once per source (the file is also the val file), counting 2
    assert "'input.tools' of 2 record(s) ignored" in warnings[0]


def test_whole_conversations_take_their_shared_opening_as_the_prompt(tmp_path, tok):
    """UltraFeedback-binarized: chosen/rejected whole conversations, a prompt string too."""
    opening = [
        USER,
        {"role": "assistant", "content": "Paris?"},
        {"role": "user", "content": "Sure?"},
    ]
    row = {
        "prompt": "Sure?",
        "chosen": [*opening, CHOSEN],
        "rejected": [*opening, REJECTED],
    }
    no_prompt = {key: row[key] for key in ("chosen", "rejected")}
    built = pairs(tok, write_jsonl(tmp_path / "w.jsonl", [row, no_prompt]))
    expected = expected_ids(tok, opening, CHOSEN, REJECTED)
    assert [ids(pair) for pair in built] == [expected, expected]
    other = write_jsonl(tmp_path / "x.jsonl", [{**row, "prompt": "Capital of Spain?"}])
    with pytest.raises(DataValidationError, match=r"x\.jsonl:1: field 'prompt': expected the "):
        load_records(other, tok)


def test_whole_conversations_that_differ_before_the_last_turn_are_refused(tmp_path, tok):
    row = {
        "chosen": [USER, CHOSEN, {"role": "user", "content": "Sure?"}, CHOSEN],
        "rejected": [USER, REJECTED, {"role": "user", "content": "Sure?"}, CHOSEN],
    }
    path = write_jsonl(tmp_path / "w.jsonl", [row])
    with pytest.raises(DataValidationError) as error:
        load_records(path, tok)
    assert (
        "w.jsonl:1: fields 'chosen', 'rejected': expected conversations that differ only in "
        "their last assistant turn, got 'chosen' going on" in str(error.value)
    )
    assert "(format conversational, detected from the first record)" in str(error.value)


def test_content_parts_are_joined_and_other_parts_refused(tmp_path, tok):
    parts = [{"type": "text", "text": "Capital "}, {"type": "text", "text": "of France?"}]
    row = {
        "prompt": [{"role": "user", "content": parts}],
        "chosen": [CHOSEN],
        "rejected": [REJECTED],
    }
    (pair,) = pairs(tok, write_jsonl(tmp_path / "p.jsonl", [row]))
    assert ids(pair) == expected_ids(tok, [USER], CHOSEN, REJECTED)
    image = {"type": "image_url", "image_url": {"url": "x.png"}}
    row["prompt"] = [{"role": "user", "content": [parts[0], image]}]
    with pytest.raises(DataValidationError, match=r"got a 'image_url' part: only text is trained"):
        load_records(write_jsonl(tmp_path / "i.jsonl", [row]), tok)


def test_hh_dialogues_go_through_the_template_with_the_option(tmp_path, tok):
    turn = "\n\nHuman: Capital of France?\n\nAssistant: Paris?\n\nHuman: Sure?\n\nAssistant:"
    row = {"chosen": f"{turn} Paris.", "rejected": f"{turn} Lyon, I think."}
    path = write_jsonl(tmp_path / "hh.jsonl", [row])
    (pair,) = pairs(tok, path, RecordSettings(chat_template=True))
    history = [
        USER,
        {"role": "assistant", "content": "Paris?"},
        {"role": "user", "content": "Sure?"},
    ]
    assert ids(pair) == expected_ids(tok, history, CHOSEN, REJECTED)
    (plain,) = pairs(tok, path)  # off by default: the text as it is, BOS and EOS added
    assert tok.decode(plain.prompt_ids) == f"<s>{turn}"
    assert tok.decode(plain.chosen_ids) == " Paris.</s>"


def test_the_report_names_the_format_and_shows_a_rendered_pair(tmp_path, tok, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", [sharegpt(from_value, True, "dict")])
    pairs(tok, path)
    printed = capsys.readouterr().out
    rendering = "format sharegpt (detected), rendered with the tokenizer's chat template"
    assert f"read 1 record, kept 1; {rendering}" in printed
    assert "data train, first pair as the model sees it (decoded ids): prompt ...'" in printed
    assert (
        "<|im_start|>user\\nCapital of France?<|im_end|>\\n<|im_start|>assistant\\n' | "
        "chosen 'Paris.<|im_end|>\\n'...\n" in printed
    )


def test_a_bad_record_names_the_file_record_field_and_detected_format(tmp_path, tok):
    good = sharegpt(from_value, True, "dict")
    bad = {**good, "conversations": [{"from": "narrator", "value": "Once"}]}
    path = write_jsonl(tmp_path / "s.jsonl", [good, bad])
    with pytest.raises(DataValidationError) as error:
        load_records(path, tok)
    assert "s.jsonl:2: field 'conversations': expected message 0 to have a role among " in str(
        error.value
    )
    assert "got from='narrator' (format sharegpt, detected from the first record)" in str(
        error.value
    )


def test_a_file_in_no_format_gets_one_error_listing_the_formats(tmp_path, tok):
    rows = [{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"}]
    with pytest.raises(DataValidationError) as error:
        load_records(write_jsonl(tmp_path / "x.jsonl", rows), tok)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'x.jsonl'}:1: expected the fields of one format (")
    for name in ("implicit", "conversational", "sharegpt", "openai"):
        assert f"; {name}: " in message
    assert "got fields ['answer', 'question']" in message and "x.jsonl:2" not in message


def test_an_unknown_format_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"data\.records\.format must be one of .*'sharegpt', 'openai'"
    ):
        FormatOptions(format="alpaca")


def test_a_tokenizer_without_a_template_names_the_format_and_the_fix(tmp_path):
    from lightning_dpo.data import build_byte_tokenizer

    path = write_jsonl(tmp_path / "o.jsonl", [openai_row()])
    with pytest.raises(ValueError, match=r"data format 'openai' renders conversations with"):
        load_records(path, build_byte_tokenizer())
