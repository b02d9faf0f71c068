"""The LightningModule: a policy, a preference loss, an optimizer and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from lightning_dpo.callbacks import REFERENCE_LOGPS_KEY
from lightning_dpo.logprobs import SequenceLogps, sequence_logps
from lightning_dpo.losses import LossOutput, PairLogps, PreferenceLoss

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]

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
)
"""Logged as ``train/<name>`` (each step) and ``val/<name>`` (mean over the validation set)."""

REWARD_FIELDS = ("chosen_reward", "rejected_reward")


class PreferenceModule(pl.LightningModule):
    """Preference optimisation of a causal LM against a managed reference policy.

    The module computes the policy's log-probs and the loss; it reads the reference
    log-probs from ``batch["reference_logps"]``, which
    :class:`~lightning_dpo.callbacks.ReferenceSwapCallback` (or any other producer)
    puts there. It does not know which strategy produced them.

    Args:
        policy: The causal LM to train (a ``transformers`` model or a peft wrapper).
        loss: The preference objective, e.g. ``PreferenceLoss("dpo", beta=0.1)``.
        optimizer: Factory taking the trainable parameters (a Hydra ``_partial_``).
        scheduler: Optional factory taking the optimizer; stepped every optimizer step.
    """

    def __init__(
        self,
        policy: nn.Module,
        loss: PreferenceLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable (a PreferenceLoss), got {type(loss).__name__}")
        self.policy = policy
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = nn.ModuleDict(
            {name.replace("/", "_"): MeanMetric() for name in METRIC_NAMES}
        )

    def setup(self, stage: str) -> None:
        """Check, before the first step, that the data carries what the loss needs."""
        if not getattr(self.loss, "requires_rewards", False) or self._trainer is None:
            return
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "require_fields"):
            datamodule.require_fields(REWARD_FIELDS, reason=f"by loss {self.loss!r}")

    def sequence_logps(self, batch: dict[str, Tensor]) -> SequenceLogps:
        """Summed response log-probs of the ``2B`` rows of ``batch`` under the policy."""
        return sequence_logps(
            self.policy, batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        )

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, PairLogps]:
        """Policy forward and loss for a batch that carries reference log-probs."""
        if REFERENCE_LOGPS_KEY not in batch:
            raise RuntimeError(
                f"batch has no '{REFERENCE_LOGPS_KEY}': add lightning_dpo.ReferenceSwapCallback "
                "to the Trainer's callbacks"
            )
        policy = self.sequence_logps(batch)
        reference = batch[REFERENCE_LOGPS_KEY]
        half = policy.sums.shape[0] // 2
        logps = PairLogps(
            policy_chosen=policy.sums[:half],
            policy_rejected=policy.sums[half:],
            reference_chosen=reference[:half],
            reference_rejected=reference[half:],
            chosen_tokens=policy.token_counts[:half],
            rejected_tokens=policy.token_counts[half:],
        )
        output = self.loss(logps, batch.get("chosen_reward"), batch.get("rejected_reward"))
        return output, logps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss, averaged over the pairs of the batch."""
        output, logps = self.compute_loss(batch)
        self._log_metrics("train", output, logps)
        return output.losses.mean()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation metrics over the whole validation set."""
        output, logps = self.compute_loss(batch)
        self._log_metrics("val", output, logps)

    def _log_metrics(self, stage: str, output: LossOutput, logps: PairLogps) -> None:
        values = {
            "loss": output.losses,
            "rewards/chosen": output.chosen_rewards,
            "rewards/rejected": output.rejected_rewards,
            "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
            "rewards/margins": output.chosen_rewards - output.rejected_rewards,
            "logps/chosen": logps.policy_chosen,
            "logps/rejected": logps.policy_rejected,
            "loss/preference": output.preference_losses,
            "loss/sft": output.sft_losses,
        }
        for name, value in values.items():
            if value is None:
                continue
            value = value.detach().float()
            if stage == "train":
                logged: Tensor | MeanMetric = value.mean()
            else:
                logged = self.val_metrics[name.replace("/", "_")]
                logged.update(value)
            self.log(
                f"{stage}/{name}",
                logged,
                on_step=stage == "train",
                on_epoch=stage != "train",
                prog_bar=name in ("loss", "rewards/accuracies"),
                batch_size=value.shape[0],
            )

    def configure_optimizers(self) -> Any:
        """Build the optimizer (and scheduler) over the trainable parameters only."""
        params = [param for param in self.policy.parameters() if param.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
