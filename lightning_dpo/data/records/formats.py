"""Record formats: which one a source is in, and the plain-text ones (explicit, implicit).

The plain-text formats turn one raw row into ``(prompt, chosen, rejected)`` strings, the
conversation formats (``conversational``, ``sharegpt``, ``openai``:
:mod:`lightning_dpo.data.records.conversations`) into messages the chat template renders; each
raises a :class:`RecordProblem` naming the field and what was expected.

Empty responses are valid: an empty string (explicit format) or nothing after the shared
prompt (implicit format, e.g. an hh-rlhf dialogue that ends at ``Assistant:``) is a
response of EOS alone. A whitespace-only response (hh-rlhf's ``Assistant: `` ending) is
kept verbatim, its whitespace tokens then EOS, so that it matches the leading space of the
other response; both count as empty responses in the data report
(:func:`is_empty_response`). A pair whose two responses are both empty, or identical, is
refused: it has nothing to prefer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_dpo.data.records.record import is_empty_response
from lightning_dpo.data.records.validation import RecordProblem, show

FORMATS = ("auto", "explicit", "implicit", "conversational", "sharegpt", "openai")
#: Formats whose records are messages, always rendered by the tokenizer's chat template.
CONVERSATION_FORMATS = ("conversational", "sharegpt", "openai")
FIELDS = (
    "prompt",
    "chosen",
    "rejected",
    "chosen_reward",
    "rejected_reward",
    "conversations",
    "system",
)
#: Turn boundaries the implicit prompt is cut after (the last one in the shared prefix).
DEFAULT_TURN_MARKERS = (
    "\n\nAssistant:",
    "\n\nassistant:",
    "<|assistant|>\n",
    "<|im_start|>assistant\n",
    "### Response:",
)


@dataclass(frozen=True)
class FormatOptions:
    """How raw rows are read as preference pairs.

    Attributes:
        format: One of :data:`FORMATS`; ``"auto"`` detects it from the first row.
        columns: Our field name -> the data's column name, e.g.
            ``{"prompt": "question", "chosen": "response_j", "rejected": "response_k"}``.
        turn_markers: Turn boundaries for the implicit prompt.
        chat_template: Render plain-text records (explicit and implicit) through the
            tokenizer's chat template too: hh-rlhf turns parsed into messages, a prompt
            without turns as one user message, each response as an assistant turn.
            Conversation formats are rendered by it always.
    """

    format: str = "auto"
    columns: Mapping[str, str] = field(default_factory=dict)
    turn_markers: tuple[str, ...] = DEFAULT_TURN_MARKERS
    chat_template: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.records.format must be one of {FORMATS}, got {self.format!r}")
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ValueError(f"columns: unknown fields {unknown}; valid fields: {FIELDS}")
        if not self.turn_markers or not all(isinstance(m, str) and m for m in self.turn_markers):
            raise ValueError(f"turn_markers must be non-empty strings, got {self.turn_markers}")

    def column(self, name: str) -> str:
        """The data's column name for our field ``name``."""
        return self.columns.get(name, name)

    def templated(self, fmt: str) -> bool:
        """Whether records of format ``fmt`` are rendered by the chat template."""
        return fmt in CONVERSATION_FORMATS or self.chat_template


def detect_format(row: Mapping[str, Any], options: FormatOptions) -> str:
    """Detects the format from a row's columns and value types.

    Args:
        row: A decoded row.
        options: Column mapping and the configured format.

    Returns:
        ``options.format`` unless it is ``"auto"``; then ``"sharegpt"`` when the row has
        a ``conversations`` column, ``"openai"`` when it has ``input.messages`` and
        ``preferred_output``, ``"conversational"`` when a text column holds messages (a
        list or a dict), ``"explicit"`` when the prompt column exists, else ``"implicit"``.
    """
    if options.format != "auto":
        return options.format
    if sharegpt_history_column(row, options) is not None:
        return "sharegpt"
    source = row.get("input")
    if isinstance(source, dict) and "messages" in source and "preferred_output" in row:
        return "openai"
    texts = [row.get(options.column(f)) for f in FIELDS[:3]]
    if any(isinstance(value, list | dict) for value in texts):
        return "conversational"
    return "explicit" if options.column("prompt") in row else "implicit"


def sharegpt_history_column(row: Mapping[str, Any], options: FormatOptions) -> str | None:
    """The column of a ShareGPT row's turns: ``conversations``, else ``messages``, else none."""
    for column in (options.column("conversations"), "messages"):
        if isinstance(row.get(column), list):
            return column
    return None


#: What each format reads, for the error of a source that matches none.
FORMAT_FIELDS = {
    "explicit": "'prompt', 'chosen', 'rejected' strings",
    "implicit": "'chosen', 'rejected' strings that share their prompt",
    "conversational": "'chosen', 'rejected' message lists (whole conversations, or with a "
    "'prompt')",
    "sharegpt": "'conversations' (or 'messages') turns, 'chosen', 'rejected'",
    "openai": "'input' with 'messages', 'preferred_output', 'non_preferred_output'",
}


def unmatched_format(row: Mapping[str, Any], options: FormatOptions) -> str | None:
    """Why a first record matches no format (``None`` when one matches or one is set).

    Detection falls back to ``implicit``, which still needs both responses: a record with
    neither is in no format this package reads, and one error says so for the whole source.
    """
    if options.format != "auto" or detect_format(row, options) != "implicit":
        return None
    needed = [options.column("chosen"), options.column("rejected")]
    if all(column in row for column in needed):
        return None
    formats = "; ".join(f"{name}: {fields}" for name, fields in FORMAT_FIELDS.items())
    return (
        f"expected the fields of one format ({formats}), got fields {sorted(row)}; "
        "set data.records.columns to map yours, or data.records.format to force one"
    )


def _text(row: Mapping[str, Any], column: str, allow_empty: bool = False) -> str:
    """The string in ``column``, or a problem naming it."""
    expected = "a string" if allow_empty else "a non-empty string"
    if column not in row or row[column] is None:
        got = "nothing (field is missing)" if column not in row else "None"
        raise RecordProblem("missing_field", f"field '{column}': expected {expected}, got {got}")
    value = row[column]
    if not isinstance(value, str):
        raise RecordProblem(
            "wrong_type", f"field '{column}': expected {expected}, got {show(value)}"
        )
    if not allow_empty and not value.strip():
        raise RecordProblem(
            "empty_response", f"field '{column}': expected {expected}, got {show(value)}"
        )
    return value


def check_different(chosen: Any, rejected: Any, options: FormatOptions) -> None:
    """Refuses a pair whose responses are identical."""
    if chosen == rejected:
        raise RecordProblem(
            "identical_responses",
            f"field '{options.column('rejected')}': expected a response different from "
            f"'{options.column('chosen')}', got the same",
        )


def check_responses(chosen: str, rejected: str, options: FormatOptions) -> None:
    """Refuses a pair whose responses are identical, or both empty (whitespace only)."""
    check_different(chosen, rejected, options)
    if is_empty_response(chosen) and is_empty_response(rejected):
        raise RecordProblem(
            "empty_response",
            f"fields '{options.column('chosen')}', '{options.column('rejected')}': expected "
            f"at least one non-empty response, got {show(chosen)} and {show(rejected)}",
        )


def explicit_texts(row: Mapping[str, Any], options: FormatOptions) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` of a row with three string columns."""
    prompt = _text(row, options.column("prompt"), allow_empty=True)
    chosen = _text(row, options.column("chosen"), allow_empty=True)
    rejected = _text(row, options.column("rejected"), allow_empty=True)
    check_responses(chosen, rejected, options)
    return prompt, chosen, rejected


def split_shared_prompt(chosen: str, rejected: str, markers: Sequence[str]) -> int | None:
    r"""Position just after the last turn marker inside the common prefix, or ``None``.

    Args:
        chosen: Whole preferred conversation.
        rejected: Whole dispreferred conversation.
        markers: Turn boundaries, e.g. ``"\n\nAssistant:"``.

    Returns:
        The prompt length: the prompt is ``chosen[:cut]`` (equal to ``rejected[:cut]``).
    """
    common = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        common += 1
    prefix = chosen[:common]
    ends = [prefix.rfind(m) + len(m) for m in markers if prefix.rfind(m) >= 0]
    return max(ends) if ends else None


def implicit_texts(row: Mapping[str, Any], options: FormatOptions) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` of two whole conversations sharing a prompt prefix.

    Each conversation must be a non-empty string; what follows the shared prompt may be
    empty (a response of EOS alone).
    """
    chosen = _text(row, options.column("chosen"))
    rejected = _text(row, options.column("rejected"))
    check_different(chosen, rejected, options)
    cut = split_shared_prompt(chosen, rejected, options.turn_markers)
    names = f"fields '{options.column('chosen')}', '{options.column('rejected')}'"
    if cut is None:
        raise RecordProblem(
            "no_shared_prompt",
            f"{names}: expected conversations sharing a prompt that ends with a turn marker "
            f"(one of {list(options.turn_markers)}), got no shared turn boundary",
        )
    check_responses(chosen[cut:], rejected[cut:], options)
    return chosen[:cut], chosen[cut:], rejected[cut:]
