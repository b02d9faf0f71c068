r"""Conversation formats: one raw row -> a :class:`~lightning_dpo.data.records.chat.Conversation`.

- ``conversational`` (TRL): ``prompt``/``chosen``/``rejected`` as message lists, or
  ``chosen``/``rejected`` as whole conversations with the prompt inside (UltraFeedback
  binarized): the prompt is then their longest shared message prefix;
- ``sharegpt`` (LLaMA-Factory, axolotl): ``conversations`` (turns in ``from``/``value`` or
  ``role``/``content``), an optional ``system`` field, ``chosen``/``rejected`` as one
  message each (a dict, or a list);
- ``openai`` (OpenAI preference fine-tuning): ``input.messages``, ``preferred_output`` and
  ``non_preferred_output``;
- plain hh-rlhf text, with ``data.records.chat_template=true``: ``\n\nHuman:`` / ``\n\nAssistant:``
  turns parsed into messages (:func:`~lightning_dpo.data.records.messages.dialogue_messages`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_dpo.data.records.chat import Conversation
from lightning_dpo.data.records.formats import (
    FormatOptions,
    check_different,
    sharegpt_history_column,
)
from lightning_dpo.data.records.messages import Message, dialogue_messages, messages, shared_prefix
from lightning_dpo.data.records.validation import RecordProblem, show


def _split_shared(prompt: list[Message], chosen: list[Message], rejected: list[Message]):
    """Moves the messages both responses start with into the prompt."""
    shared = shared_prefix(chosen, rejected)
    return prompt + chosen[:shared], chosen[shared:], rejected[shared:]


def _leading(prompt: list[Message], chosen: list[Message], rejected: list[Message]) -> bool:
    """Whether both conversations start with the whole prompt (it is repeated in them)."""
    n = len(prompt)
    return bool(prompt) and chosen[:n] == prompt and rejected[:n] == prompt


def _require_responses(conversation: Conversation, options: FormatOptions) -> Conversation:
    """Refuses a pair with no message left after its prompt."""
    for column, response in (
        (options.column("chosen"), conversation.chosen),
        (options.column("rejected"), conversation.rejected),
    ):
        if not response:
            raise RecordProblem(
                "empty_response",
                f"field '{column}': expected messages after the shared prompt, got none",
            )
    return conversation


def conversational_pair(row: Mapping[str, Any], options: FormatOptions) -> Conversation:
    """A TRL-style row of message lists (see the module doc).

    A list prompt that the conversations repeat at their start is taken out of them; a
    string prompt is one user message, unless the conversations already share a prefix
    that ends in a user turn (the string then repeats it, as UltraFeedback's ``prompt``,
    and is checked against it).
    """
    chosen_col, rejected_col = options.column("chosen"), options.column("rejected")
    chosen, rejected = (
        messages(row.get(chosen_col), chosen_col),
        messages(row.get(rejected_col), rejected_col),
    )
    check_different(chosen, rejected, options)
    shared = shared_prefix(chosen, rejected)
    prompt_col = options.column("prompt")
    value = row.get(prompt_col)
    if value is None:
        if not shared:
            raise RecordProblem(
                "no_shared_prompt",
                f"fields '{chosen_col}', '{rejected_col}': expected conversations that start "
                f"with the same prompt messages (or a '{prompt_col}' field), got none shared",
            )
        prompt: list[Message] = []
    elif isinstance(value, str):
        repeated = shared and chosen[shared - 1]["role"] != "assistant"
        if repeated and value.strip() != chosen[shared - 1]["content"].strip():
            raise RecordProblem(
                "no_shared_prompt",
                f"field '{prompt_col}': expected the conversations' last shared turn "
                f"({show(chosen[shared - 1]['content'])}), got {show(value)}",
            )
        prompt = [] if repeated else [{"role": "user", "content": value}]
    else:
        prompt = messages(value, prompt_col, allow_empty=True)
        if _leading(prompt, chosen, rejected):
            chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    conversation = _require_responses(
        Conversation(*_split_shared(prompt, chosen, rejected)), options
    )
    if value is None or isinstance(value, str):  # whole conversations: one last turn each
        _require_last_turns(conversation, chosen_col, rejected_col)
    return conversation


def _require_last_turns(conversation: Conversation, chosen_col: str, rejected_col: str) -> None:
    """Refuses whole conversations that differ before their last assistant turn."""
    for column, response in (
        (chosen_col, conversation.chosen),
        (rejected_col, conversation.rejected),
    ):
        if any(m["role"] != "assistant" for m in response):
            raise RecordProblem(
                "no_shared_prompt",
                f"fields '{chosen_col}', '{rejected_col}': expected conversations that differ "
                f"only in their last assistant turn, got '{column}' going on after the first "
                f"difference with {[m['role'] for m in response]} turns",
            )


def _system(row: Mapping[str, Any], column: str) -> list[Message]:
    """The ``system`` field as a system message (none when absent or empty)."""
    value = row.get(column)
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise RecordProblem("wrong_type", f"field '{column}': expected a string, got {show(value)}")
    return [{"role": "system", "content": value}]


def sharegpt_pair(row: Mapping[str, Any], options: FormatOptions) -> Conversation:
    """A ShareGPT preference row: ``conversations`` + one chosen and one rejected message."""
    column = sharegpt_history_column(row, options) or options.column("conversations")
    history = messages(row.get(column), column)
    system = _system(row, options.column("system"))
    if system and history[0]["role"] == "system":
        raise RecordProblem(
            "bad_messages",
            f"field '{options.column('system')}': expected it or a system turn in "
            f"'{column}', got both",
        )
    chosen_col, rejected_col = options.column("chosen"), options.column("rejected")
    chosen = _response_messages(row.get(chosen_col), chosen_col)
    rejected = _response_messages(row.get(rejected_col), rejected_col)
    check_different(chosen, rejected, options)
    return _require_responses(Conversation(system + history, chosen, rejected), options)


def _response_messages(value: Any, column: str) -> list[Message]:
    """A ShareGPT response: one message (a dict, or a one-message list) or a plain string."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return messages(value, column)


def openai_pair(row: Mapping[str, Any], options: FormatOptions) -> Conversation:
    """An OpenAI preference fine-tuning row (``input.messages`` and the two outputs)."""
    value = row.get("input")
    if not isinstance(value, dict) or "messages" not in value:
        raise RecordProblem(
            "wrong_type",
            f"field 'input': expected an object with 'messages', got {show(value)}",
        )
    prompt = messages(value["messages"], "input.messages")
    chosen = messages(row.get("preferred_output"), "preferred_output")
    rejected = messages(row.get("non_preferred_output"), "non_preferred_output")
    if chosen == rejected:
        raise RecordProblem(
            "identical_responses",
            "field 'non_preferred_output': expected a response different from "
            "'preferred_output', got the same",
        )
    return Conversation(prompt, chosen, rejected)


def dialogue_pair(prompt: str, chosen: str, rejected: str) -> Conversation:
    r"""Plain-text prompt and responses as messages (hh-rlhf's ``\n\nHuman:`` turns parsed).

    A prompt without turn markers is one user message; each response is an assistant
    turn (and the turns that follow it, if it goes on).
    """
    return Conversation(
        dialogue_messages(prompt, "user"),
        dialogue_messages(chosen, "assistant"),
        dialogue_messages(rejected, "assistant"),
    )
