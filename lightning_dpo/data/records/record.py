"""Preference records and the error raised when data fails validation."""

from __future__ import annotations

from dataclasses import dataclass

GENERATED_SOURCE = "<generated>"


class DataValidationError(ValueError):
    """Raised when preference data is malformed or cannot serve the requested purpose.

    The message always starts with the location of the offending record, e.g.
    ``data/train.jsonl:17: field 'chosen': expected a non-empty string, got 42``.
    """


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference pair: a prompt, a preferred and a dispreferred response.

    Attributes:
        prompt: Text the model is conditioned on.
        chosen: Preferred response.
        rejected: Dispreferred response.
        chosen_reward: Optional scalar reward of ``chosen`` (needed by some losses).
        rejected_reward: Optional scalar reward of ``rejected``.
        source: Where the record came from (a file path or a generator name).
        line: 1-based line in ``source``, or ``None`` when the source has no lines.
        index: 0-based row of the record in ``source`` (Parquet, JSON arrays, datasets),
            used in messages when ``line`` is ``None``.
        templated: Whether the texts were rendered by the tokenizer's chat template: they
            are then tokenised as they are (the template wrote BOS and end-of-turn); plain
            text gets the tokenizer's BOS before the prompt and EOS after each response.
        empty_turn: For templated texts, whether an assistant turn had no content (a
            plain text's emptiness is read from the text itself).
    """

    prompt: str
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    source: str = GENERATED_SOURCE
    line: int | None = None
    index: int | None = None
    templated: bool = False
    empty_turn: bool = False

    @property
    def has_rewards(self) -> bool:
        """Whether both rewards are set."""
        return self.chosen_reward is not None and self.rejected_reward is not None

    @property
    def has_empty_response(self) -> bool:
        """Whether a response is empty (trained as its end token alone; counted in the report)."""
        if self.templated:
            return self.empty_turn
        return is_empty_response(self.chosen) or is_empty_response(self.rejected)


def is_empty_response(text: str) -> bool:
    """Whether a response text is empty or whitespace only (valid, counted in the report)."""
    return not text.strip()


def format_location(source: str, line: int | None, index: int | None = None) -> str:
    """Formats where a record came from, for error messages.

    Args:
        source: File path or generator name.
        line: 1-based line number in ``source`` (``None`` for generated data).
        index: 0-based position of the record in its dataset, used when ``line`` is ``None``.

    Returns:
        ``"source:line"``, ``"source[index]"`` or just ``"source"``.
    """
    if line is not None:
        return f"{source}:{line}"
    if index is not None:
        return f"{source}[{index}]"
    return source
