"""Errors a user can fix, and how ``train.py`` shows them: one block, no traceback."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

from lightning_dpo.data.records.record import DataValidationError

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting that cannot work: the message names the field and what it accepts."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: corrupt, incomplete or of another setup."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    DataValidationError,
    FloatingPointError,
    InstantiationException,
)
"""Errors whose message says what to fix; ``train.py`` shows them without a traceback."""

_TARGET = re.compile(r"Error in call to target '([^']+)'")
_FULL_KEY = re.compile(r"full_key: (\S+)\s*$")


def describe(error: BaseException) -> str:
    """The message of a user error, with where Hydra was building it when it failed.

    A Hydra ``InstantiationException`` wraps the error of the class it was building:
    that error's own message is shown, followed by the config key and the target.
    """
    if not isinstance(error, InstantiationException) or error.__cause__ is None:
        return str(error)
    text = str(error)
    target, key = _TARGET.search(text), _FULL_KEY.search(text)
    where = f"{key.group(1)}: " if key else ""
    building = f" (building {where}{target.group(1)})" if target else ""
    return f"{error.__cause__}{building}"


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Turn a user error into one logged block and exit code 1; ``HYDRA_FULL_ERROR=1`` re-raises.

    Other exceptions (bugs, interrupts) propagate untouched, with their traceback.

    Raises:
        SystemExit: With code 1, after logging a user error.
    """
    try:
        yield
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        wrapped = isinstance(error, InstantiationException) and error.__cause__ is not None
        name = type(error.__cause__ if wrapped else error).__name__
        log.error("%s: %s\n(set HYDRA_FULL_ERROR=1 for the traceback)", name, describe(error))
        raise SystemExit(1) from None
