"""The metrics a step logs, by TRL's names, from the loss output and the policy's log-probs."""

from __future__ import annotations

from torch import Tensor

from lightning_dpo.losses import LossOutput, PairLogps

METRIC_NAMES = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "loss/preference",
    "loss/sft",
    "objective_rewards/chosen",
    "objective_rewards/rejected",
    "objective_rewards/margins",
)
"""Logged as ``train/<name>`` (each step) and ``val/<name>`` (mean over the validation set).

``rewards/*`` are TRL's (``beta`` times the summed log-ratio, for every objective);
``objective_rewards/*`` are what the objective compares where that differs (length-normalised
for ipo/sigmoid_norm/``average_logps``, f-mapped under an f-divergence), else not logged."""


def metric_values(output: LossOutput, logps: PairLogps) -> dict[str, Tensor | None]:
    """Each metric's per-pair values (``None`` where the loss has no such part).

    Besides :data:`METRIC_NAMES`, a mix of objectives adds ``loss/<name>`` per term.
    """
    return {
        "loss": output.losses,
        "rewards/chosen": output.chosen_rewards,
        "rewards/rejected": output.rejected_rewards,
        "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
        "rewards/margins": output.chosen_rewards - output.rejected_rewards,
        "logps/chosen": logps.policy_chosen,
        "logps/rejected": logps.policy_rejected,
        "loss/preference": output.preference_losses,
        "loss/sft": output.sft_losses,
        **{f"loss/{name}": value for name, value in (output.terms or {}).items()},
        "objective_rewards/chosen": output.objective_chosen_rewards,
        "objective_rewards/rejected": output.objective_rejected_rewards,
        "objective_rewards/margins": None
        if output.objective_chosen_rewards is None
        else output.objective_chosen_rewards - output.objective_rejected_rewards,
    }
