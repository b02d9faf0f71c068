"""Preference-optimisation objectives: pure functions over per-sequence log-probs.

Every objective takes a :class:`PairLogps` (summed response log-probabilities of the chosen and
rejected completions under the policy and the frozen reference, plus token counts) and returns a
:class:`LossOutput` holding the *unreduced* per-example losses and the detached rewards
``beta * (pi - ref)`` (TRL's definition, for every objective).
Reduction (the mean over the batch) is left to the caller. :class:`PreferenceLoss` is the
configurable entry point that Hydra instantiates.

Modules: ``core`` (types, numerics), ``margin`` (objectives of the pair margin: dpo,
sigmoid_norm, ipo, hinge, robust, exo_pair, discopop), ``anchored`` (objectives of each
response's log-ratio: nca_pair, bco_pair, sppo_hard, apo_zero, apo_down), ``aot`` (batch
quantiles), ``reward`` (the RPO family), ``sft``, ``transforms`` (options across objectives),
``registry``, ``preference`` (:class:`PreferenceLoss`).
"""

from lightning_dpo.losses.anchored import (
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    nca_pair_loss,
    sppo_hard_loss,
)
from lightning_dpo.losses.aot import aot_loss, aot_unpaired_loss
from lightning_dpo.losses.bco import BcoPair
from lightning_dpo.losses.core import LossOutput, PairLogps
from lightning_dpo.losses.margin import (
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    robust_loss,
    sigmoid_norm_loss,
)
from lightning_dpo.losses.options import LossOptions
from lightning_dpo.losses.preference import PreferenceLoss
from lightning_dpo.losses.registry import (
    F_DIVERGENCE_OBJECTIVES,
    LENGTH_NORMALISED,
    OBJECTIVES,
    QUANTILE_OBJECTIVES,
    REWARD_OBJECTIVES,
    ObjectiveSpec,
)
from lightning_dpo.losses.reward import rpo_bwd_kl_loss, rpo_fwd_kl_loss, rpo_sq_loss
from lightning_dpo.losses.sft import SFT_AVERAGES, sft_loss, sft_objective
from lightning_dpo.losses.transforms import (
    F_DIVERGENCES,
    apply_f_divergence,
    f_divergence_map,
    reference_free,
    token_average,
    wpo_weights,
)

__all__ = [
    "F_DIVERGENCES",
    "F_DIVERGENCE_OBJECTIVES",
    "LENGTH_NORMALISED",
    "OBJECTIVES",
    "QUANTILE_OBJECTIVES",
    "REWARD_OBJECTIVES",
    "SFT_AVERAGES",
    "BcoPair",
    "LossOptions",
    "LossOutput",
    "ObjectiveSpec",
    "PairLogps",
    "PreferenceLoss",
    "aot_loss",
    "aot_unpaired_loss",
    "apo_down_loss",
    "apo_zero_loss",
    "apply_f_divergence",
    "bco_pair_loss",
    "discopop_loss",
    "dpo_loss",
    "exo_pair_loss",
    "f_divergence_map",
    "hinge_loss",
    "ipo_loss",
    "nca_pair_loss",
    "reference_free",
    "robust_loss",
    "rpo_bwd_kl_loss",
    "rpo_fwd_kl_loss",
    "rpo_sq_loss",
    "sft_loss",
    "sft_objective",
    "sigmoid_norm_loss",
    "sppo_hard_loss",
    "token_average",
    "wpo_weights",
]
