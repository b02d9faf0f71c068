"""Every objective by its configuration name: its function and what the loss must know of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from lightning_dpo.losses.anchored import (
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    nca_pair_loss,
    sppo_hard_loss,
)
from lightning_dpo.losses.aot import aot_loss, aot_unpaired_loss
from lightning_dpo.losses.bco import BcoPair
from lightning_dpo.losses.checks import finite, in_range
from lightning_dpo.losses.core import LossOutput
from lightning_dpo.losses.margin import (
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    robust_loss,
    sigmoid_norm_loss,
)
from lightning_dpo.losses.reward import rpo_bwd_kl_loss, rpo_fwd_kl_loss, rpo_sq_loss
from lightning_dpo.losses.sft import sft_objective

ParamCheck = Callable[[str, object], float]
"""``(field name, value) -> value`` checked, or a ``ValueError`` naming the field."""


def _smoothing(name: str, value: object) -> float:
    return in_range(name, value, 0.0, 0.5, low_open=False, high_open=True)


def _tau(name: str, value: object) -> float:
    return in_range(name, value, 0.0, 1.0, low_open=True, high_open=False)


def _any_finite(name: str, value: object) -> float:
    return finite(name, value, "a finite number")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: its pure function and what :class:`PreferenceLoss` must know of it.

    Attributes:
        name: The configuration name (``loss=<name>``, ``loss/<name>`` in the logs).
        function: ``fn(logps, beta, **params) -> LossOutput``; a Hydra partial of it (with
            its hyper-parameters) is how the objective is configured.
        params: The function's hyper-parameters beyond ``beta``, each with its check.
        needs_rewards: It reads ``chosen_reward``/``rejected_reward``.
        length_normalised: It compares per-token mean log-probs (needs token counts).
        quantile: Its losses are per batch quantile, not per pair.
        f_divergence: It admits an ``f_divergence`` other than ``reverse_kl`` (a function
            of one pair's margin, where f-DPO's ``beta log Z(x)`` cancels).
        module: For an objective with state, the ``nn.Module`` that holds it and is
            called instead of ``function``.
    """

    name: str
    function: Callable[..., LossOutput]
    params: Mapping[str, ParamCheck] = field(default_factory=dict)
    needs_rewards: bool = False
    length_normalised: bool = False
    quantile: bool = False
    f_divergence: bool = False
    module: type | None = None

    def make(self) -> Callable[..., LossOutput]:
        """The objective at its defaults (a fresh module for a stateful one)."""
        return self.module() if self.module is not None else self.function


_SMOOTHED = {"label_smoothing": _smoothing}
_RPO = {"gt_reward_scale": _any_finite}
_SPECS = (
    ObjectiveSpec("dpo", dpo_loss, _SMOOTHED, f_divergence=True),
    ObjectiveSpec("hinge", hinge_loss, f_divergence=True),
    ObjectiveSpec("ipo", ipo_loss, length_normalised=True, f_divergence=True),
    ObjectiveSpec("robust", robust_loss, _SMOOTHED, f_divergence=True),
    ObjectiveSpec("exo_pair", exo_pair_loss, _SMOOTHED, f_divergence=True),
    ObjectiveSpec("nca_pair", nca_pair_loss),
    ObjectiveSpec("bco_pair", bco_pair_loss, module=BcoPair),
    ObjectiveSpec("sppo_hard", sppo_hard_loss),
    ObjectiveSpec("aot", aot_loss, _SMOOTHED, quantile=True),
    ObjectiveSpec("aot_unpaired", aot_unpaired_loss, _SMOOTHED, quantile=True),
    ObjectiveSpec("apo_zero", apo_zero_loss),
    ObjectiveSpec("apo_down", apo_down_loss),
    ObjectiveSpec("discopop", discopop_loss, {"tau": _tau}, f_divergence=True),
    ObjectiveSpec("sigmoid_norm", sigmoid_norm_loss, length_normalised=True, f_divergence=True),
    ObjectiveSpec("rpo_sq", rpo_sq_loss, _RPO, needs_rewards=True, f_divergence=True),
    ObjectiveSpec("rpo_fwd_kl", rpo_fwd_kl_loss, _RPO, needs_rewards=True, f_divergence=True),
    ObjectiveSpec("rpo_bwd_kl", rpo_bwd_kl_loss, _RPO, needs_rewards=True, f_divergence=True),
    ObjectiveSpec("sft", sft_objective),
)
OBJECTIVES: dict[str, ObjectiveSpec] = {spec.name: spec for spec in _SPECS}
"""Objectives by configuration name. ``sft`` in a mix is the SFT term (``sft_weight``)."""

_BY_CALLABLE: dict[object, ObjectiveSpec] = {
    **{spec.function: spec for spec in _SPECS},
    **{spec.module: spec for spec in _SPECS if spec.module is not None},
}


def spec_of(objective: object) -> ObjectiveSpec | None:
    """The spec of an objective given as a function, a partial of one, or a module."""
    target = objective.func if isinstance(objective, partial) else objective
    return _BY_CALLABLE.get(target) or _BY_CALLABLE.get(type(target))


def names_where(flag: str) -> frozenset[str]:
    """The objectives whose spec has ``flag`` set (``"needs_rewards"``, ``"quantile"``, ...)."""
    return frozenset(spec.name for spec in _SPECS if getattr(spec, flag))


REWARD_OBJECTIVES = names_where("needs_rewards")
"""Objectives that need per-pair ground-truth rewards."""
LENGTH_NORMALISED = names_where("length_normalised")
"""Objectives defined on per-token mean log-probs (they need the token counts)."""
QUANTILE_OBJECTIVES = names_where("quantile")
"""Objectives whose losses are per batch quantile, not per pair."""
F_DIVERGENCE_OBJECTIVES = names_where("f_divergence")
"""Objectives that admit ``f_divergence`` other than ``reverse_kl``: functions of the margin
``f'(u_c) - f'(u_r)`` of one pair, where the ``beta log Z(x)`` of f-DPO's reparameterised reward
cancels. TRL 1.16 admits the same, less the rpo family (which it does not have), plus ``sft``
(which reads no log-ratio: here ``sft`` is not refused in a mix, nor read)."""
