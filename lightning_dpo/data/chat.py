"""Conversational records: lists of ``{role, content}`` messages rendered by a chat template."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import FormatOptions, check_different
from lightning_dpo.data.validation import RecordProblem, show


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raises a clear error when the tokenizer cannot render conversations.

    Raises:
        ValueError: If ``tokenizer.chat_template`` is not set.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"conversational data (lists of {{role, content}} messages) needs a tokenizer with "
            f"a chat template, but {type(tokenizer).__name__} "
            f"{getattr(tokenizer, 'name_or_path', '') or ''} has none: set data.tokenizer to "
            "one that has (or set tokenizer.chat_template), or use string columns"
        )


def _messages(row: Mapping[str, Any], column: str, allow_empty: bool = False) -> list[dict]:
    """The message list in ``column``, or a problem naming it."""
    expected = "a list of {role, content} messages"
    if column not in row or row[column] is None:
        raise RecordProblem("missing_field", f"field '{column}': expected {expected}, got nothing")
    value = row[column]
    if not isinstance(value, list):
        raise RecordProblem(
            "wrong_type", f"field '{column}': expected {expected}, got {show(value)}"
        )
    if not value and not allow_empty:
        raise RecordProblem("empty_response", f"field '{column}': expected {expected}, got []")
    for i, message in enumerate(value):
        ok = isinstance(message, dict) and all(
            isinstance(message.get(k), str) for k in ("role", "content")
        )
        if not ok:
            raise RecordProblem(
                "bad_messages",
                f"field '{column}': expected message {i} to have string 'role' and "
                f"'content', got {show(message)}",
            )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _shared_messages(chosen: list[dict], rejected: list[dict]) -> int:
    """Number of leading messages the two conversations share."""
    shared = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        shared += 1
    return shared


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], prompt: bool) -> str:
    """The chat template's text for ``messages`` (with the generation prompt if ``prompt``)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def _response_text(
    tokenizer: PreTrainedTokenizerBase, prompt: list[dict], response: list[dict], column: str
) -> str:
    """The rendered response: the full conversation minus the rendered prompt, EOS stripped."""
    head = _render(tokenizer, prompt, prompt=True)
    full = _render(tokenizer, prompt + response, prompt=False)
    if not full.startswith(head):
        raise RecordProblem(
            "bad_messages",
            f"field '{column}': expected the chat template to render the conversation as "
            "prompt + response, got a rendering that does not start with the prompt's",
        )
    text = full[len(head) :]
    eos = tokenizer.eos_token
    if eos and text.rstrip().endswith(eos):  # EOS is appended as a token after tokenising
        text = text.rstrip()[: -len(eos)]
    if not text.strip():
        raise RecordProblem("empty_response", f"field '{column}': expected a response, got nothing")
    return text


def conversational_texts(
    row: Mapping[str, Any], options: FormatOptions, tokenizer: PreTrainedTokenizerBase
) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` texts of a row of message lists.

    With a prompt column, the prompt is its messages; without, it is the leading messages
    the two conversations share. The prompt is rendered with the generation prompt (a
    leading BOS text is dropped: the tokeniser prepends BOS), each response as the rest of
    its rendered conversation (a trailing EOS text is dropped: EOS is appended as a token).
    A string prompt is taken as one user message.
    """
    chosen_col, rejected_col = options.column("chosen"), options.column("rejected")
    chosen, rejected = _messages(row, chosen_col), _messages(row, rejected_col)
    check_different(chosen, rejected, options)
    prompt_col = options.column("prompt")
    if prompt_col in row and isinstance(row[prompt_col], str):
        prompt = [{"role": "user", "content": row[prompt_col]}]
    elif prompt_col in row:
        prompt = _messages(row, prompt_col, allow_empty=True)
    else:
        shared = _shared_messages(chosen, rejected)
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        for column, messages in ((chosen_col, chosen), (rejected_col, rejected)):
            if not messages:
                raise RecordProblem(
                    "empty_response",
                    f"field '{column}': expected messages after the shared prompt, got none",
                )
    prompt_text = _render(tokenizer, prompt, prompt=True)
    bos = tokenizer.bos_token
    if bos and prompt_text.startswith(bos):
        prompt_text = prompt_text[len(bos) :]
    return (
        prompt_text,
        _response_text(tokenizer, prompt, chosen, chosen_col),
        _response_text(tokenizer, prompt, rejected, rejected_col),
    )
