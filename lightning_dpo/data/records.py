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
    """

    prompt: str
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    source: str = GENERATED_SOURCE
    line: int | None = None
    index: int | None = None

    @property
    def has_rewards(self) -> bool:
        """Whether both rewards are set."""
        return self.chosen_reward is not None and self.rejected_reward is not None


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
