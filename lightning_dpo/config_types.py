"""Config values checked against the type hints of what they configure, before it is built.

``trainer.max_steps=abc`` would otherwise reach Lightning as a string and fail deep inside
with ``'<' not supported between instances of 'str' and 'int'``. Here it fails first,
as ``trainer.max_steps: expected an integer, got 'abc'``. Only plain hints are judged
(``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal`` and unions of them); a value
for any other hint is left to the class itself.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_dpo.errors import ConfigError

_UNIONS = (typing.Union, types.UnionType)
_PLAIN = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
}


def accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits ``hint``; ``True`` for hints this module does not judge."""
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        return any(accepts(arm, value) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return any(type(value) is type(choice) and value == choice for choice in hint.__args__)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    return True


def expected(hint: Any) -> str:
    """What ``hint`` accepts, in words: ``"an integer or null"``, ``"one of ['a', 'b']"``."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in _UNIONS else (hint,)
    choices = [c for arm in arms if typing.get_origin(arm) is typing.Literal for c in arm.__args__]
    words = [f"one of {choices}"] if choices else []
    words += [
        _PLAIN.get(arm, getattr(arm, "__name__", str(arm)))
        for arm in arms
        if typing.get_origin(arm) is not typing.Literal
    ]
    return " or ".join(dict.fromkeys(words))


def _hints(target: str) -> dict[str, Any]:
    """The parameter hints of a Hydra ``_target_``.

    A function's own, or a class's ``__init__`` hints merged over its bases' (a subclass
    that passes ``**kwargs`` on keeps its base's hints).
    """
    try:
        obj = get_object(target)
        if not inspect.isclass(obj):
            return typing.get_type_hints(obj)
        hints: dict[str, Any] = {}
        for cls in reversed(obj.__mro__):
            if "__init__" in vars(cls) and cls is not object:
                hints.update(typing.get_type_hints(cls.__init__))
        return hints
    except Exception:  # an unresolvable hint is not the user's error: judge nothing
        return {}


def check_types(node: DictConfig, key: str) -> None:
    """Check every plain value of a config node against its ``_target_``'s hints.

    Args:
        node: A node with a ``_target_`` (other nodes are left alone).
        key: The node's key in the run config, for the message (``"trainer"``).

    Raises:
        ConfigError: ``<key>.<field>: expected <what>, got <value>`` for the first value
            that does not fit.
    """
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        return
    hints = _hints(target)
    for name in node:
        if name.startswith("_") or name not in hints or OmegaConf.is_missing(node, name):
            continue
        value = node[name]
        if isinstance(value, DictConfig | ListConfig) or accepts(hints[name], value):
            continue
        raise ConfigError(f"{key}.{name}: expected {expected(hints[name])}, got {value!r}")
