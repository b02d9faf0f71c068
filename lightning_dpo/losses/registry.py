"""Every objective by its configuration name, and what each one needs."""

from __future__ import annotations

from collections.abc import Callable

from lightning_dpo.losses.anchored import (
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    nca_pair_loss,
    sppo_hard_loss,
)
from lightning_dpo.losses.aot import aot_loss, aot_unpaired_loss
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

OBJECTIVES: dict[str, Callable[..., LossOutput]] = {
    "dpo": dpo_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "robust": robust_loss,
    "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss,
    "bco_pair": bco_pair_loss,
    "sppo_hard": sppo_hard_loss,
    "aot": aot_loss,
    "aot_unpaired": aot_unpaired_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "discopop": discopop_loss,
    "sigmoid_norm": sigmoid_norm_loss,
    "rpo_sq": rpo_sq_loss,
    "rpo_fwd_kl": rpo_fwd_kl_loss,
    "rpo_bwd_kl": rpo_bwd_kl_loss,
    "sft": sft_objective,
}
"""Objectives by configuration name. Each is called as ``fn(logps, beta=..., **params)``."""

REWARD_OBJECTIVES: frozenset[str] = frozenset({"rpo_sq", "rpo_fwd_kl", "rpo_bwd_kl"})
"""Objectives that need per-pair ground-truth rewards."""

LENGTH_NORMALISED: frozenset[str] = frozenset({"ipo", "sigmoid_norm"})
"""Objectives defined on per-token mean log-probs (they need the token counts)."""

QUANTILE_OBJECTIVES: frozenset[str] = frozenset({"aot", "aot_unpaired"})
"""Objectives whose losses are per batch quantile, not per pair."""

F_DIVERGENCE_OBJECTIVES: frozenset[str] = frozenset(
    {
        "dpo",
        "sigmoid_norm",
        "ipo",
        "hinge",
        "robust",
        "exo_pair",
        "discopop",
        "rpo_sq",
        "rpo_fwd_kl",
        "rpo_bwd_kl",
    }
)
"""Objectives that admit ``f_divergence`` other than ``reverse_kl``: functions of the margin
``f'(u_c) - f'(u_r)`` of one pair, where the ``beta log Z(x)`` of f-DPO's reparameterised reward
cancels. TRL 1.16 admits the same, less the rpo family (which it does not have), plus ``sft``
(which reads no log-ratio: here ``sft`` is not refused in a mix, nor read)."""

OBJECTIVE_PARAMS: dict[str, dict[str, str]] = {
    "dpo": {"label_smoothing": "label_smoothing"},
    "robust": {"label_smoothing": "label_smoothing"},
    "exo_pair": {"label_smoothing": "label_smoothing"},
    "aot": {"label_smoothing": "label_smoothing"},
    "aot_unpaired": {"label_smoothing": "label_smoothing"},
    "discopop": {"tau": "discopop_tau"},
    "rpo_sq": {"gt_reward_scale": "gt_reward_scale"},
    "rpo_fwd_kl": {"gt_reward_scale": "gt_reward_scale"},
    "rpo_bwd_kl": {"gt_reward_scale": "gt_reward_scale"},
    "sft": {"average": "sft_average"},
}
"""For each objective with hyper-parameters beyond ``beta``: function argument -> the
:class:`~lightning_dpo.losses.PreferenceLoss` attribute that supplies it."""

SMOOTHED_OBJECTIVES: frozenset[str] = frozenset(
    name for name, params in OBJECTIVE_PARAMS.items() if "label_smoothing" in params
)
"""Objectives that read ``label_smoothing``."""
