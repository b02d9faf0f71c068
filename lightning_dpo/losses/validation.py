"""Eager validation of a loss configuration: every error names the ``loss.<field>``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lightning_dpo.losses.registry import (
    F_DIVERGENCE_OBJECTIVES,
    OBJECTIVES,
    QUANTILE_OBJECTIVES,
    SMOOTHED_OBJECTIVES,
)
from lightning_dpo.losses.sft import sft_mode
from lightning_dpo.losses.transforms import F_DIVERGENCES


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


def check_objective(name: object, field: str = "objective") -> str:
    """Return ``name`` if it names a registered objective.

    Args:
        name: Configured objective name.
        field: Field name for the message.

    Returns:
        The objective name.

    Raises:
        ValueError: If the name is not in ``OBJECTIVES``; the message lists the valid names.
    """
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(f"loss.{field} must be one of {sorted(OBJECTIVES)}, got {name!r}")
    return name


def components(objective: object, weights: Sequence[object] | None) -> dict[str, float]:
    """Normalise ``objective`` (a name, a ``{name: weight}`` mapping or a list) to a mapping.

    Args:
        objective: ``"dpo"``, ``{"dpo": 0.8, "sft": 1.0}`` or ``["dpo", "sft"]``.
        weights: Weights for a list of names (default: all 1); only with a list.

    Returns:
        ``{name: weight}`` in the configured order.

    Raises:
        ValueError: On an unknown name, a repeated name, a negative or non-finite weight, a
            weight count that does not match, or no positive weight at all.
    """
    if isinstance(objective, str):
        if weights is not None:
            raise ValueError("loss.weights applies only to a list of objectives; got one name")
        pairs: list[tuple[object, object]] = [(check_objective(objective), 1.0)]
    elif isinstance(objective, Mapping):
        if weights is not None:
            raise ValueError("loss.weights conflicts with a {name: weight} loss.objective")
        pairs = list(objective.items())
    elif isinstance(objective, Sequence) and objective:
        names = list(objective)
        values = [1.0] * len(names) if weights is None else list(weights)
        if len(values) != len(names):
            raise ValueError(
                f"loss.weights must have one weight per objective ({len(names)}), got {len(values)}"
            )
        pairs = list(zip(names, values, strict=True))
    else:
        raise ValueError(
            f"loss.objective must be a name, a {{name: weight}} mapping or a list of names "
            f"from {sorted(OBJECTIVES)}, got {objective!r}"
        )
    result: dict[str, float] = {}
    for name, weight in pairs:
        check_objective(name, f"objective entry {name!r}")
        if name in result:
            raise ValueError(f"loss.objective lists {name!r} twice")
        result[name] = finite(f"objective.{name}", weight, "a finite weight >= 0")
        if result[name] < 0:
            raise ValueError(f"loss.objective.{name} must be a finite weight >= 0, got {weight!r}")
    if not any(result.values()):
        raise ValueError(f"loss.objective needs at least one weight > 0, got {result}")
    return result


def options(
    *,
    gt_reward_scale: object,
    label_smoothing: object,
    discopop_tau: object,
    f_divergence: object,
    f_alpha: object,
    ld_alpha: object,
    sft_average: object,
    **flags: object,
) -> dict[str, object]:
    """Check the hyper-parameters and cross-objective options of a loss.

    Args:
        gt_reward_scale: Any finite number.
        label_smoothing: In ``[0, 0.5)``.
        discopop_tau: In ``(0, 1]``.
        f_divergence: One of ``F_DIVERGENCES``.
        f_alpha: In ``(0, 1]``.
        ld_alpha: ``None`` or in ``[0, 1]``.
        sft_average: ``"token"``, ``"sum"``, ``"batch_token"`` or a bool (stored as its name).
        **flags: Boolean options (``average_logps``, ``use_weighting``, ...).

    Returns:
        The checked values by field name.

    Raises:
        ValueError: Naming the first field out of range and what it must be.
    """
    if f_divergence not in F_DIVERGENCES:
        raise ValueError(
            f"loss.f_divergence must be one of {list(F_DIVERGENCES)}, got {f_divergence!r}"
        )
    return {
        "gt_reward_scale": finite("gt_reward_scale", gt_reward_scale, "a finite number"),
        "label_smoothing": in_range(
            "label_smoothing", label_smoothing, 0.0, 0.5, low_open=False, high_open=True
        ),
        "discopop_tau": in_range(
            "discopop_tau", discopop_tau, 0.0, 1.0, low_open=True, high_open=False
        ),
        "f_divergence": f_divergence,
        "f_alpha": in_range("f_alpha", f_alpha, 0.0, 1.0, low_open=True, high_open=False),
        "ld_alpha": None
        if ld_alpha is None
        else in_range("ld_alpha", ld_alpha, 0.0, 1.0, low_open=False, high_open=False),
        "sft_average": sft_mode(sft_average),  # type: ignore[arg-type]
        **{name: flag(name, value) for name, value in flags.items()},
    }


def combinations(
    names: set[str], *, label_smoothing: float, f_divergence: str, use_weighting: bool
) -> None:
    """Refuse options that no objective, or some objective, of the loss cannot honour.

    Args:
        names: The preference objectives of the loss (``sft`` excluded).
        label_smoothing: The checked ``loss.label_smoothing``.
        f_divergence: The checked ``loss.f_divergence``.
        use_weighting: The checked ``loss.use_weighting``.

    Raises:
        ValueError: Naming the option and the objectives that cannot read it.
    """
    if label_smoothing and not names & SMOOTHED_OBJECTIVES:
        raise ValueError(
            f"loss.label_smoothing applies to {sorted(SMOOTHED_OBJECTIVES)}; "
            f"{sorted(names) or ['sft']} do not read it"
        )
    if f_divergence != "reverse_kl":
        f_divergence_objectives(names, f_divergence)
    if use_weighting and names & QUANTILE_OBJECTIVES:
        raise ValueError(
            "loss.use_weighting (WPO) weights pairs, but "
            f"{sorted(names & QUANTILE_OBJECTIVES)} return per-quantile losses"
        )


def f_divergence_objectives(names: set[str], f_divergence: str) -> None:
    """Refuse an f-divergence for objectives where f-DPO's ``beta log Z(x)`` does not cancel.

    Args:
        names: The preference objectives of the loss (``sft`` excluded).
        f_divergence: The configured divergence, not ``reverse_kl``.

    Raises:
        ValueError: If an objective is not in ``F_DIVERGENCE_OBJECTIVES``, or there is none.
    """
    refused = sorted(names - F_DIVERGENCE_OBJECTIVES)
    if refused:
        raise ValueError(
            f"loss.f_divergence={f_divergence!r} cannot apply to objective "
            f"{', '.join(map(repr, refused))}: f-DPO's reward beta * f'(pi/ref) holds only up "
            "to beta * log Z(x), which cancels in the chosen-minus-rejected margin of one "
            "pair but not in objectives that score each response on its own or sort across "
            f"the batch. It applies to {sorted(F_DIVERGENCE_OBJECTIVES)}; use "
            "f_divergence='reverse_kl' with the others"
        )
    if not names:
        raise ValueError(
            f"loss.f_divergence={f_divergence!r} applies to "
            f"{sorted(F_DIVERGENCE_OBJECTIVES)}; 'sft' alone does not read it"
        )
