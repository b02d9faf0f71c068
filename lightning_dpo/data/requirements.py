"""Checking that every tokenised pair carries the optional fields a loss needs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields as dataclass_fields

from lightning_dpo.data.records.record import DataValidationError, format_location
from lightning_dpo.pairs import TokenizedPair

PAIR_FIELDS = frozenset(f.name for f in dataclass_fields(TokenizedPair))


def _missing_message(
    pair: TokenizedPair, index: int, missing: Sequence[str], reason: str | None
) -> str:
    """Error message for a pair lacking required fields."""
    names = ", ".join(f"'{f}'" for f in missing)
    noun = "field" if len(missing) == 1 else "fields"
    where = format_location(pair.source, pair.line, index)
    suffix = f" ({reason})" if reason else ""
    return f"{where}: missing {noun} {names} required by the loss{suffix}"


def require_pair_fields(
    splits: Iterable[Sequence[TokenizedPair]], fields: Sequence[str], reason: str | None = None
) -> None:
    """Checks that every pair of every split has the given fields set.

    Args:
        splits: The tokenised splits.
        fields: Fields of :class:`TokenizedPair` that must not be ``None``.
        reason: Appended in parentheses to the error message, e.g. the loss name.

    Raises:
        DataValidationError: Naming the first offending record (file and line, or
            source and index for generated data) and the fields it lacks.
        ValueError: If a field name is not a field of the pairs.
    """
    unknown = [f for f in fields if f not in PAIR_FIELDS]
    if unknown:
        raise ValueError(f"unknown fields {unknown}; known fields: {sorted(PAIR_FIELDS)}")
    for split in splits:
        for index, pair in enumerate(split):
            missing = [f for f in fields if getattr(pair, f) is None]
            if missing:
                raise DataValidationError(_missing_message(pair, index, missing, reason))
