"""`python train.py data=jsonl data.source.path=<file>` on a file of each format."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_dpo.data import build_char_tokenizer
from lightning_dpo.training import train
from tests.helpers import (
    CHAT_TEMPLATE,
    FAST_OVERRIDES,
    chatml_tokenizer,
    compose_train_config,
    run_python,
    save_local_checkpoint,
    write_jsonl,
)


def rows(fmt: str) -> list[dict[str, object]]:
    out = []
    for i in range(1, 13):
        digits = f"{i}{i + 1}{i % 3}"
        answer, wrong = "".join(sorted(digits)), "".join(sorted(digits, reverse=True))
        if fmt == "explicit":
            out.append({"prompt": digits + ">", "chosen": answer, "rejected": wrong})
        elif fmt == "implicit":  # hh-like: capitals, and a chosen that ends at "Assistant:"
            turn = f"\n\nHuman: Sort {digits}, it's urgent\n\nAssistant:"
            chosen = turn if i == 1 else f"{turn} {answer}"
            out.append({"chosen": chosen, "rejected": f"{turn} {wrong}"})
        else:
            user = {"role": "user", "content": digits}
            out.append(
                {
                    "prompt": [user],
                    "chosen": [{"role": "assistant", "content": answer}],
                    "rejected": [{"role": "assistant", "content": wrong}],
                }
            )
    return out


@pytest.mark.parametrize("fmt", ["explicit", "implicit", "conversational"])
def test_train_on_each_format(tmp_path: Path, fmt: str) -> None:
    data = write_jsonl(tmp_path / f"{fmt}.jsonl", rows(fmt))
    overrides = [
        "data=jsonl",
        f"data.source.path={data}",
        f"data.tokens.cache_dir={tmp_path / 'cache'}",
    ]
    if fmt == "conversational":
        tok = build_char_tokenizer()
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(tmp_path / "tok")
        overrides.append(f"data.tokenizer={tmp_path / 'tok'}")
    cfg = compose_train_config(
        tmp_path, [*overrides, "data.batches.batch_size=4", *FAST_OVERRIDES[3:]]
    )
    metrics = train(cfg)
    assert "train/loss" in metrics and "val/rewards/accuracies" in metrics


def train_py(tmp_path: Path, *overrides: str):
    """``python train.py data=jsonl`` with quick settings, running under ``tmp_path``."""
    quick = ["data.batches.batch_size=4", *FAST_OVERRIDES[3:], f"hydra.run.dir={tmp_path / 'run'}"]
    return run_python("train.py", "data=jsonl", *quick, *overrides)


@pytest.mark.slow
def test_train_py_command_line_with_data_path(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", rows("implicit"))
    done = train_py(
        tmp_path, f"data.source.path={data}", f"data.tokens.cache_dir={tmp_path / 'cache'}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cache").is_dir()


def test_data_jsonl_without_a_path_names_the_setting(tmp_path: Path) -> None:
    cfg = compose_train_config(tmp_path, ["data=jsonl", *FAST_OVERRIDES])
    with pytest.raises(Exception, match=r"data\.source\.path"):
        train(cfg)


def chat_rows(fmt: str) -> list[dict[str, object]]:
    """12 records in a chat format (ShareGPT, OpenAI, whole conversations)."""
    out = []
    for i in range(1, 13):
        digits = f"{i}{i + 1}{i % 3}"
        answer, wrong = "".join(sorted(digits)), "".join(sorted(digits, reverse=True))
        user = {"role": "user", "content": f"Sort {digits}"}
        good, bad = (
            {"role": "assistant", "content": answer},
            {"role": "assistant", "content": wrong},
        )
        if fmt == "sharegpt":
            turn = {"from": "human", "value": user["content"]}
            out.append(
                {
                    "conversations": [turn],
                    "chosen": {"from": "gpt", "value": answer},
                    "rejected": {"from": "gpt", "value": wrong},
                }
            )
        elif fmt == "openai":
            out.append(
                {
                    "input": {"messages": [user]},
                    "preferred_output": [good],
                    "non_preferred_output": [bad],
                }
            )
        else:
            out.append({"chosen": [user, good], "rejected": [user, bad]})
    return out


def chat_model(tmp_path: Path) -> Path:
    """A local tiny Llama whose tokenizer has a ChatML template (what an instruct model has)."""
    return save_local_checkpoint(
        tmp_path / "chat-model", "llama", chatml_tokenizer(), max_position_embeddings=512
    )


@pytest.mark.parametrize("fmt", ["sharegpt", "openai", "whole_conversations"])
def test_chat_formats_train_with_only_the_data_path_and_the_model(tmp_path: Path, fmt: str):
    data = write_jsonl(tmp_path / f"{fmt}.jsonl", chat_rows(fmt))
    overrides = [
        "data=jsonl",
        f"data.source.path={data}",
        f"model.pretrained={chat_model(tmp_path)}",
    ]
    cfg = compose_train_config(
        tmp_path, [*overrides, "data.batches.batch_size=4", *FAST_OVERRIDES[3:]]
    )
    metrics = train(cfg)
    assert "train/loss" in metrics and "val/rewards/accuracies" in metrics


@pytest.mark.slow
def test_train_py_trains_a_sharegpt_file_through_the_chat_template(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sharegpt.jsonl", chat_rows("sharegpt"))
    model = f"model.pretrained={chat_model(tmp_path)}"
    done = train_py(tmp_path, f"data.source.path={data}", model, "callbacks=minimal", "logger=none")
    assert done.returncode == 0, done.stderr[-2000:]
    rendering = "format sharegpt (detected), rendered with the tokenizer's chat template"
    assert rendering in done.stdout + done.stderr
