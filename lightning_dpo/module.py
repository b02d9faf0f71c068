"""The LightningModule: a policy, a preference loss, an optimizer and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.integrity import stamp_checkpoint, verify_checkpoint
from lightning_dpo.logprobs import (
    DEFAULT_LOGPS_CHUNK_SIZE,
    SequenceLogps,
    pair_logps,
    sequence_logps,
)
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
    "objective_rewards/chosen",
    "objective_rewards/rejected",
    "objective_rewards/margins",
)
"""Logged as ``train/<name>`` (each step) and ``val/<name>`` (mean over the validation set).

``rewards/*`` are TRL's (``beta`` times the summed log-ratio, for every objective);
``objective_rewards/*`` are what the objective compares where that differs (length-normalised
for ipo/sigmoid_norm/``average_logps``, f-mapped under an f-divergence), else not logged."""

REWARD_FIELDS = ("chosen_reward", "rejected_reward")


class PreferenceModule(pl.LightningModule):
    """Preference optimisation of a causal LM against a managed reference policy.

    The module computes the policy's log-probs and the loss; it reads the reference
    log-probs from ``batch["reference_logps"]``, which
    :class:`~lightning_dpo.reference.ReferenceSwapCallback` (or any other producer)
    puts there. It does not know which strategy produced them.

    Args:
        policy: The causal LM to train (a ``transformers`` model or a peft wrapper).
        loss: The preference objective, e.g. ``PreferenceLoss("dpo", beta=0.1)``.
        optimizer: Factory taking the trainable parameters (a Hydra ``_partial_``).
        scheduler: Optional factory taking the optimizer; stepped every optimizer step.
        logps_chunk_size: Score this many positions at a time, never materialising the
            ``[2B, T, V]`` float32 log-softmax (``None``: the plain full computation).
    """

    def __init__(
        self,
        policy: nn.Module,
        loss: PreferenceLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        logps_chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if logps_chunk_size is not None and logps_chunk_size < 1:
            raise ValueError(
                f"logps_chunk_size must be a positive number of positions or None, "
                f"got {logps_chunk_size}"
            )
        if not isinstance(loss, PreferenceLoss):
            raise TypeError(f"loss must be a PreferenceLoss, got {type(loss).__name__}")
        self.policy = policy
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.logps_chunk_size = logps_chunk_size
        self._policy_sharded = False
        self._last_finite: tuple[int, Tensor, Tensor] | None = None
        self._said_unstamped = False
        self.val_metrics = nn.ModuleDict(
            {name.replace("/", "_"): MeanMetric() for name in METRIC_NAMES}
        )

    def configure_model(self) -> None:
        """Shard the policy with FSDP2 when trained under ``ModelParallelStrategy``.

        Each decoder layer (a module whose class name ends in ``DecoderLayer``) becomes its
        own FSDP unit, then the whole policy. Under other strategies this does nothing.
        The reference snapshot then holds each rank's local shards only.
        """
        mesh = getattr(self, "_device_mesh", None)  # set by ModelParallelStrategy
        if mesh is None or self._policy_sharded:
            return
        from torch.distributed.fsdp import fully_shard

        data_parallel = mesh["data_parallel"]
        for module in self.policy.modules():
            if type(module).__name__.endswith("DecoderLayer"):
                fully_shard(module, mesh=data_parallel)
        fully_shard(self.policy, mesh=data_parallel)
        self._policy_sharded = True

    def setup(self, stage: str) -> None:
        """Check, before the first step, that the data carries what the loss needs."""
        if not self.loss.requires_rewards or self._trainer is None:
            return
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "require_fields"):
            datamodule.require_fields(REWARD_FIELDS, reason=f"by loss {self.loss!r}")

    @property
    def reference_free(self) -> bool:
        """Whether the loss needs no reference log-probs (the reference callback then skips)."""
        return self.loss.reference_free

    def sequence_logps(
        self, batch: dict[str, Tensor], *, wpo_weights: bool = False
    ) -> SequenceLogps:
        """Summed response log-probs of the ``2B`` rows of ``batch`` under the policy.

        The reference callback calls this too, so the loss's per-token options that must
        apply to both sides (LD-DPO's ``ld_alpha``) are applied here.

        Args:
            batch: The collated batch.
            wpo_weights: Also compute WPO's per-row log-weights (the policy forward only).
        """
        return sequence_logps(
            self.policy,
            batch["input_ids"],
            batch["attention_mask"],
            batch["loss_mask"],
            ld_alpha=self.loss.ld_alpha,
            wpo_weights=wpo_weights,
            chunk_size=self.logps_chunk_size,
        )

    def logps_settings(self) -> dict[str, float | None]:
        """What, besides weights and data, changes the reference log-probs (cache key)."""
        return {
            "ld_alpha": self.loss.ld_alpha,
            "logps_chunk_size": self.logps_chunk_size,
        }

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, PairLogps]:
        """Policy forward and loss for a batch that carries reference log-probs.

        A ``reference_free`` loss needs no reference log-probs; zeros stand in when the
        batch has none.
        """
        if REFERENCE_LOGPS_KEY not in batch and not self.reference_free:
            raise RuntimeError(
                f"batch has no '{REFERENCE_LOGPS_KEY}': add lightning_dpo.ReferenceSwapCallback "
                "to the Trainer's callbacks"
            )
        policy = self.sequence_logps(batch, wpo_weights=self.loss.use_weighting)
        reference = batch.get(REFERENCE_LOGPS_KEY)
        if reference is None:
            reference = torch.zeros_like(policy.sums)
        logps = pair_logps(policy, reference)
        output = self.loss(logps, batch.get("chosen_reward"), batch.get("rejected_reward"))
        return output, logps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss, averaged over the pairs of the batch.

        Raises:
            FloatingPointError: The loss is NaN or infinite; the message names the step
                and the last finite values, and training stops before the optimizer step.
        """
        output, logps = self.compute_loss(batch)
        loss = output.losses.mean()
        self._check_finite(loss, output)
        self._log_metrics("train", output, logps)
        return loss

    def _check_finite(self, loss: Tensor, output: LossOutput) -> None:
        """Raise on a non-finite loss; one host sync per step (the finiteness test)."""
        if bool(torch.isfinite(loss)):
            margin = (output.chosen_rewards - output.rejected_rewards).mean()
            self._last_finite = (self.global_step, loss.detach(), margin.detach())
            return
        last = self._last_finite
        history = (
            f"last finite loss {float(last[1]):.6g} at step {last[0]} "
            f"(reward margin {float(last[2]):.6g})"
            if last
            else "no finite loss before it"
        )
        raise FloatingPointError(
            f"training loss is {float(loss.detach())} at step {self.global_step}; {history}. "
            "Stopping: lower the learning rate or beta, or check the data of this batch."
        )

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
            **{f"loss/{name}": value for name, value in (output.terms or {}).items()},
            "objective_rewards/chosen": output.objective_chosen_rewards,
            "objective_rewards/rejected": output.objective_rejected_rewards,
            "objective_rewards/margins": None
            if output.objective_chosen_rewards is None
            else output.objective_chosen_rewards - output.objective_rejected_rewards,
        }
        for name, value in values.items():
            if value is None:
                continue
            value = value.detach().float()
            if stage == "train":
                logged: Tensor | MeanMetric = value.mean()
            elif name.replace("/", "_") in self.val_metrics:
                logged = self.val_metrics[name.replace("/", "_")]
                logged.update(value)
            else:  # a term of a mixed loss: Lightning's batch-size-weighted epoch mean
                logged = value.mean()
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fingerprint every weight and optimizer tensor of the checkpoint (verified on load).

        Sharded (FSDP2) checkpoints are not fingerprinted; that is said once.
        """
        if not stamp_checkpoint(checkpoint) and not self._said_unstamped:
            self._said_unstamped = True
            rank_zero_info("Sharded checkpoint: its tensors are saved without fingerprints.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose weights or optimizer state differ from their fingerprints.

        Raises:
            RuntimeError: Naming the checkpoint and the first tensor that differs.
        """
        where = getattr(self._trainer, "ckpt_path", None) or "the checkpoint"
        if not verify_checkpoint(checkpoint, str(where)):
            rank_zero_warn(f"{where} carries no fingerprints: its tensors load unverified.")
