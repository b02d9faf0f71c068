"""From the ``objective`` setting to named objectives and their weights, each one checked.

An objective is given as its name (``"dpo"``, at its defaults), as the function or a partial
of it carrying its hyper-parameters (``partial(dpo_loss, label_smoothing=0.1)``, which is what
a Hydra ``_partial_: true`` node builds), or, for an objective with state, as its module
(``BcoPair()``). A mix is a mapping: ``{name: weight}`` (each at its defaults), or
``{name: objective}`` with the weights beside it; or a list with a list of weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from lightning_dpo.losses.checks import finite
from lightning_dpo.losses.core import LossOutput
from lightning_dpo.losses.registry import OBJECTIVES, ObjectiveSpec, spec_of

Objective = Callable[..., LossOutput]
"""``objective(logps, beta=..., [chosen_reward=..., rejected_reward=...]) -> LossOutput``."""


def resolve(objective: object, where: str) -> tuple[ObjectiveSpec, Objective]:
    """The spec and the callable of one objective given as a name, function, partial or module.

    Args:
        objective: The configured objective.
        where: Its config path, for messages (``"loss.objective"``, ``"loss.objective.dpo"``).

    Raises:
        ValueError: An unknown objective, or a hyper-parameter it does not take or out of range.
    """
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise ValueError(f"{where} must be one of {sorted(OBJECTIVES)}, got {objective!r}")
        return OBJECTIVES[objective], OBJECTIVES[objective].make()
    spec = spec_of(objective)
    if spec is None:
        raise ValueError(
            f"{where} must be an objective name from {sorted(OBJECTIVES)}, or one of their "
            f"functions (a partial with its hyper-parameters), got {objective!r}"
        )
    if isinstance(objective, partial):
        _check_params(spec, objective, where)
    return spec, objective


def _check_params(spec: ObjectiveSpec, objective: partial, where: str) -> None:
    """Refuse hyper-parameters an objective does not take, or out of their range."""
    unknown = sorted(set(objective.keywords) - set(spec.params))
    if unknown or objective.args:
        raise ValueError(
            f"{where}: objective {spec.name!r} takes the hyper-parameters "
            f"{sorted(spec.params) or 'none'} besides beta, got {unknown or list(objective.args)}"
        )
    for name, value in objective.keywords.items():
        spec.params[name](f"{where.removeprefix('loss.')}.{name}", value)


def _entries(objective: object, weights: object) -> list[tuple[object, object, str]]:
    """``(objective, weight, config path)`` of each entry of the ``objective`` setting."""
    if isinstance(objective, Mapping):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in objective.values()):
            if weights is not None:
                raise ValueError("loss.weights conflicts with a {name: weight} loss.objective")
            return [(name, w, f"loss.objective.{name}") for name, w in objective.items()]
        given = dict(weights or {})
        unknown = sorted(set(given) - set(objective))
        if unknown:
            raise ValueError(f"loss.weights names {unknown}, which loss.objective lacks")
        return [(o, given.get(n, 1.0), f"loss.objective.{n}") for n, o in objective.items()]
    if isinstance(objective, Sequence) and not isinstance(objective, str) and objective:
        values = [1.0] * len(objective) if weights is None else list(weights)  # type: ignore[call-overload]
        if len(values) != len(objective):
            raise ValueError(
                f"loss.weights must have one weight per objective ({len(objective)}), "
                f"got {len(values)}"
            )
        pairs = zip(objective, values, strict=True)
        return [(o, w, f"loss.objective[{i}]") for i, (o, w) in enumerate(pairs)]
    if weights is not None:
        raise ValueError("loss.weights applies only to a mix of objectives; got one objective")
    return [(objective, 1.0, "loss.objective")]


def resolve_terms(
    objective: object, weights: object = None
) -> tuple[dict[str, Objective], dict[str, float]]:
    """Every objective of the setting by name, and its weight.

    Raises:
        ValueError: On an unknown or repeated objective, a negative or non-finite weight, a
            weight count that does not match, or no positive weight at all.
    """
    objectives: dict[str, Objective] = {}
    weight_of: dict[str, float] = {}
    for entry, weight, where in _entries(objective, weights):
        spec, callable_ = resolve(entry, where)
        if spec.name in objectives:
            raise ValueError(f"loss.objective lists {spec.name!r} twice")
        objectives[spec.name] = callable_
        weight_of[spec.name] = finite(f"objective.{spec.name}", weight, "a finite weight >= 0")
        if weight_of[spec.name] < 0:
            raise ValueError(
                f"loss.objective.{spec.name} must be a finite weight >= 0, got {weight!r}"
            )
    if not any(weight_of.values()):
        raise ValueError(f"loss.objective needs at least one weight > 0, got {weight_of}")
    return objectives, weight_of


def describe(name: str, objective: Objective) -> str:
    """``name``, with the hyper-parameters a partial sets: ``"dpo(label_smoothing=0.1)"``."""
    keywords = objective.keywords if isinstance(objective, partial) else {}
    if not keywords:
        return name
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})"
