r"""Chat messages: the ``{role, content}`` lists chat templates render, read from any spelling.

Preference data spells a conversation in several ways: TRL's and OpenAI's ``{"role",
"content"}`` messages, ShareGPT's ``{"from", "value"}`` turns (LLaMA-Factory, axolotl) with
roles ``human``/``gpt``, and hh-rlhf's plain text with ``\n\nHuman:`` / ``\n\nAssistant:``
turns. Each becomes one list of ``{"role", "content"}`` messages with the roles chat
templates know: ``system``, ``user``, ``assistant``, ``tool``.
"""

from __future__ import annotations

import re
from typing import Any

from lightning_dpo.data.records.validation import RecordProblem, show

Message = dict[str, str]

#: Every role spelling read -> the chat template's role.
ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
}
#: The two spellings of a message: ``(role key, content key)``.
SPELLINGS = (("role", "content"), ("from", "value"))
_HH_TURN = re.compile(r"\n\n(Human|Assistant):", re.IGNORECASE)


def message(value: Any, column: str, position: int) -> Message:
    """One message in either spelling, its role mapped (see :data:`ROLES`).

    Raises:
        RecordProblem: ``bad_messages`` naming the field, the message and what was expected.
    """
    where = f"field '{column}': expected message {position} to have"
    if not isinstance(value, dict):
        raise RecordProblem("bad_messages", f"{where} 'role' and 'content', got {show(value)}")
    keys = next((k for k in SPELLINGS if k[0] in value), SPELLINGS[0])
    role, content = value.get(keys[0]), value.get(keys[1])
    if isinstance(content, list):
        content = _joined_text_parts(content, f"field '{column}': message {position} '{keys[1]}'")
    if not isinstance(role, str) or not isinstance(content, str):
        raise RecordProblem(
            "bad_messages", f"{where} string '{keys[0]}' and '{keys[1]}', got {show(value)}"
        )
    if role.lower() not in ROLES:
        raise RecordProblem(
            "bad_messages",
            f"{where} a role among {sorted(ROLES)}, got {keys[0]}={role!r}",
        )
    return {"role": ROLES[role.lower()], "content": content}


def _joined_text_parts(parts: list[Any], where: str) -> str:
    """Content spelled as parts (``[{"type": "text", "text": ...}]``, OpenAI's): the texts joined.

    Raises:
        RecordProblem: ``bad_messages`` for a part that is not text (an image, audio, ...).
    """
    texts = []
    for i, part in enumerate(parts):
        if not (isinstance(part, dict) and part.get("type") == "text"):
            got = part.get("type") if isinstance(part, dict) else None
            raise RecordProblem(
                "bad_messages",
                f"{where}: expected part {i} to be text ({{'type': 'text', 'text': ...}}), "
                f"got {f'a {got!r} part' if got else show(part)}: only text is trained",
            )
        if not isinstance(part.get("text"), str):
            raise RecordProblem(
                "bad_messages",
                f"{where}: expected part {i} to have a string 'text', got {show(part)}",
            )
        texts.append(part["text"])
    return "".join(texts)


def messages(value: Any, column: str, allow_empty: bool = False) -> list[Message]:
    """The messages of a field: a list of messages, or one message on its own.

    ShareGPT preference data holds ``chosen``/``rejected`` as one message dict each;
    TRL's and OpenAI's as lists.

    Raises:
        RecordProblem: ``missing_field``, ``wrong_type``, ``empty_response`` (an empty
            list, unless ``allow_empty``) or ``bad_messages``.
    """
    expected = "a list of {role, content} messages"
    if value is None:
        raise RecordProblem("missing_field", f"field '{column}': expected {expected}, got nothing")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordProblem(
            "wrong_type", f"field '{column}': expected {expected}, got {show(value)}"
        )
    if not value and not allow_empty:
        raise RecordProblem("empty_response", f"field '{column}': expected {expected}, got []")
    return [message(m, column, i) for i, m in enumerate(value)]


def shared_prefix(first: list[Message], second: list[Message]) -> int:
    """Number of leading messages two conversations share."""
    shared = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        shared += 1
    return shared


def dialogue_messages(text: str, first_role: str = "user") -> list[Message]:
    r"""hh-rlhf text as messages: one per ``\n\nHuman:`` / ``\n\nAssistant:`` turn.

    Turn markers are matched case-insensitively; each content is stripped of surrounding
    whitespace. Text before the first marker is a turn of ``first_role`` (the whole text
    when it has no marker: a plain prompt is one user message, a plain response one
    assistant message). A last ``Assistant:`` turn with no content is the generation
    prompt, not a message, and is dropped.

    Args:
        text: The dialogue (a prompt, or a response that may go on for further turns).
        first_role: Role of the text before the first marker.

    Returns:
        The messages, in order.
    """
    parts = _HH_TURN.split(text)
    turns = [(first_role, parts[0])] if parts[0].strip() or len(parts) == 1 else []
    for i in range(1, len(parts), 2):
        turns.append(("user" if parts[i].lower() == "human" else "assistant", parts[i + 1]))
    if len(parts) > 1 and turns[-1][0] == "assistant" and not turns[-1][1].strip():
        turns.pop()
    return [{"role": role, "content": content.strip()} for role, content in turns]
