"""Numeric and boolean checks of loss settings: every error names the ``loss.<field>``."""

from __future__ import annotations

import math


def finite(name: str, value: object, requirement: str) -> float:
    """Convert a configuration value to a finite float.

    Args:
        name: Field name used in the error message (without the ``loss.`` prefix).
        value: The configured value.
        requirement: Human-readable requirement, e.g. ``"a finite number > 0"``.

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: If ``value`` is not a real number or is not finite.
    """
    message = f"loss.{name} must be {requirement}, got {value!r}"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not math.isfinite(number):
        raise ValueError(message)
    return number


def in_range(
    name: str, value: object, low: float, high: float, *, low_open: bool, high_open: bool
) -> float:
    """A finite float within an interval, else an error naming the field and the interval.

    Args:
        name: Field name (without the ``loss.`` prefix).
        value: The configured value.
        low: Lower bound.
        high: Upper bound.
        low_open: Whether ``low`` itself is excluded.
        high_open: Whether ``high`` itself is excluded.

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: If ``value`` is not a finite number in the interval.
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    requirement = f"a number in {interval}"
    number = finite(name, value, requirement)
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if below or above:
        raise ValueError(f"loss.{name} must be {requirement}, got {value!r}")
    return number


def flag(name: str, value: object) -> bool:
    """A boolean option, refusing strings such as ``"false"`` that would be truthy.

    Args:
        name: Field name (without the ``loss.`` prefix).
        value: The configured value.

    Returns:
        ``value``.

    Raises:
        ValueError: If ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise ValueError(f"loss.{name} must be true or false, got {value!r}")
    return value
