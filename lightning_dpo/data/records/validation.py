"""Record problems, the error-or-skip policy and the per-reason skip report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_dpo.data.records.record import DataValidationError

ON_INVALID_CHOICES = ("error", "skip")
#: Reasons a record is refused, as counted in skip mode.
REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "empty_response",
    "identical_responses",
    "no_shared_prompt",
    "bad_messages",
    "bad_reward",
    "inconsistent_rewards",
    "identical_tokens",
    "empty_prompt",
)
_MAX_REPORTED_ERRORS = 20


class RecordProblem(Exception):
    """One thing wrong with one record: a reason from :data:`REASONS` and a message.

    The message names the field and what was expected, e.g.
    ``field 'chosen': expected a non-empty string, got 42``; the location is added by
    whoever knows it (see :func:`located`).
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; known reasons: {REASONS}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def noted(self, note: str) -> RecordProblem:
        """The same problem, its message followed by ``note`` (e.g. the record's format)."""
        return RecordProblem(self.reason, f"{self.message} {note}")


def show(value: Any) -> str:
    """Short repr of an offending value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_on_invalid(on_invalid: str) -> None:
    """Raises ``ValueError`` naming the valid choices when ``on_invalid`` is not one."""
    if on_invalid not in ON_INVALID_CHOICES:
        raise ValueError(f"on_invalid must be one of {ON_INVALID_CHOICES}, got {on_invalid!r}")


@dataclass
class SkipReport:
    """What validation (and truncation) refused for one source, by reason.

    Attributes:
        source: The file, folder or dataset the records came from.
        total: Records read (valid or not).
        skipped: Refused records per reason (skip mode; error mode raises instead).
        reading: How the records were read, e.g. ``"format sharegpt (detected), rendered
            with the tokenizer's chat template"``; ``None`` for generated data.
    """

    source: str
    total: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    reading: str | None = None

    @property
    def kept(self) -> int:
        """Records that passed validation."""
        return self.total - sum(self.skipped.values())

    def counts(self) -> str:
        """Records read, kept, refused per reason (skip mode), and how they were read.

        E.g. ``read 9 records, kept 8, refused 1 (wrong_type 1); format implicit
        (detected), plain text``.
        """
        head = f"read {self.total} record{'' if self.total == 1 else 's'}, kept {self.kept}"
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            head = f"{head}, refused {sum(self.skipped.values())} ({reasons})"
        return head if self.reading is None else f"{head}; {self.reading}"

    def summary(self) -> str:
        """One line: the source, then :meth:`counts`."""
        return f"{self.source}: {self.counts()}"


def apply_policy(
    problems: Sequence[tuple[str, RecordProblem]], on_invalid: str, report: SkipReport | None
) -> None:
    """Raises for the problems (``"error"``) or counts them in ``report`` (``"skip"``).

    Args:
        problems: ``(location, problem)`` pairs, in data order.
        on_invalid: ``"error"`` or ``"skip"``.
        report: Where skipped records are counted (needed in skip mode only).

    Raises:
        DataValidationError: In error mode, listing up to 20 problems as
            ``location: field 'name': expected ..., got ...``.
    """
    if not problems:
        return
    if on_invalid == "error":
        lines = [f"{where}: {problem.message}" for where, problem in problems]
        shown = lines[:_MAX_REPORTED_ERRORS]
        if len(lines) > len(shown):
            shown.append(f"... and {len(lines) - len(shown)} more errors")
        raise DataValidationError("\n".join(shown))
    if report is None:
        raise ValueError("skip mode needs a SkipReport to count the skipped records in")
    report.skipped.update(problem.reason for _, problem in problems)
