r"""Conversations through the tokenizer's chat template: prompt and responses as it renders them.

The prompt is the conversation up to the generation prompt (``add_generation_prompt``), a
response the rest of the whole conversation's rendering, end-of-turn included
(``"Paris.<|im_end|>\\n"`` for ChatML): exactly what TRL's ``DPOTrainer`` tokenises for
conversational data. Nothing is stripped and nothing added: the template writes BOS and
the end of each turn (:attr:`~lightning_dpo.data.records.record.PreferenceRecord.templated`).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.messages import Message
from lightning_dpo.data.records.validation import RecordProblem, show


def require_chat_template(tokenizer: PreTrainedTokenizerBase | None, fmt: str) -> None:
    """Raises a clear error when the tokenizer cannot render conversations.

    Args:
        tokenizer: The data's tokenizer.
        fmt: The format that needs the template (named in the message).

    Raises:
        ValueError: If the tokenizer is missing or has no ``chat_template``.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return
    name = type(tokenizer).__name__ if tokenizer is not None else "no tokenizer"
    path = getattr(tokenizer, "name_or_path", "") or ""
    raise ValueError(
        f"data format {fmt!r} renders conversations with the tokenizer's chat template, but "
        f"{name} {path}".rstrip()
        + " has none: use a chat model's tokenizer (model.pretrained=<directory or .gguf> "
        "or data.tokenizer=<directory>), set tokenizer.chat_template, or give plain-text "
        "data (string prompt/chosen/rejected, data.records.chat_template=false)"
    )


@dataclass(frozen=True)
class Conversation:
    """One preference pair as messages.

    Attributes:
        prompt: The shared conversation so far (may be empty: the template's preamble).
        chosen: The preferred continuation (usually one assistant message).
        rejected: The dispreferred continuation.
    """

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]

    @property
    def empty_turn(self) -> bool:
        """Whether one response has no content at all (an assistant turn left empty)."""
        return is_empty(self.chosen) or is_empty(self.rejected)


def is_empty(messages: list[Message]) -> bool:
    """Whether messages hold no content but whitespace (an empty assistant turn)."""
    return not "".join(m["content"] for m in messages).strip()


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], prompt: bool) -> str:
    """The chat template's text for ``messages`` (with the generation prompt if ``prompt``)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def _response(
    tokenizer, conversation: Conversation, head: str, response: list[Message], column: str
) -> str:
    """The rendered response: the whole conversation's text after ``head``, the prompt's."""
    full = _render(tokenizer, conversation.prompt + response, prompt=False)
    if not full.startswith(head):
        raise RecordProblem(
            "bad_messages",
            f"field '{column}': expected the chat template to render the conversation as "
            f"prompt + response, got a rendering that does not start with the prompt's "
            f"({show(full[: len(head)])} against {show(head)})",
        )
    if len(full) == len(head):
        raise RecordProblem(
            "empty_response",
            f"field '{column}': expected the chat template to render the response as some "
            "text, got nothing",
        )
    return full[len(head) :]


def render(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, columns: tuple[str, str]
) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` texts as the chat template renders them.

    Args:
        tokenizer: A tokenizer with a chat template.
        conversation: The pair's messages.
        columns: The chosen and rejected columns, for messages.

    Raises:
        RecordProblem: Both responses empty, or a template that does not render a
            conversation as its prompt followed by the response.
    """
    if is_empty(conversation.chosen) and is_empty(conversation.rejected):
        raise RecordProblem(
            "empty_response",
            f"fields '{columns[0]}', '{columns[1]}': expected at least one non-empty "
            "response, got two empty assistant turns",
        )
    head = _render(tokenizer, conversation.prompt, prompt=True)
    return (
        head,
        _response(tokenizer, conversation, head, conversation.chosen, columns[0]),
        _response(tokenizer, conversation, head, conversation.rejected, columns[1]),
    )
