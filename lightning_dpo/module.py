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

from lightning_dpo.batch import REFERENCE_LOGPS_KEY, STEP_PAIRS_KEY
from lightning_dpo.checkpoint_checks import check_resumable
from lightning_dpo.integrity import stamp_checkpoint
from lightning_dpo.losses import LossOutput, PairLogps, PreferenceLoss
from lightning_dpo.metrics import METRIC_NAMES, metric_values
from lightning_dpo.scoring import (
    DEFAULT_LOGPS_CHUNK_SIZE,
    SequenceLogps,
    pair_logps,
    response_head_unsupported,
    sequence_logps,
)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]

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
            float32 log-softmax (``None``: the plain full computation).
        response_head: Score through the response-only LM head
            (:mod:`lightning_dpo.scoring.head`: the head's logits only at the response
            tokens, a chunk at a time, recomputed in backward) where it is exact on the
            policy (probed once, in ``setup``, or at the first forward outside a Trainer;
            otherwise the reason is logged and the model's own logits are scored).
            ``False``: always the model's logits.
    """

    def __init__(
        self,
        policy: nn.Module,
        loss: PreferenceLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        logps_chunk_size: int | None = DEFAULT_LOGPS_CHUNK_SIZE,
        response_head: bool = True,
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
        self.response_head = response_head
        self._response_only: bool | None = None
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
        """Probe the response-only head, and check the data carries what the loss needs.

        Runs before the strategy places or shards the policy, so the probe's forwards see
        the plain model.
        """
        _ = self.response_only
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
        """Summed response log-probs of the ``2B`` sequences of ``batch`` under the policy.

        The reference callback calls this too, so the loss's per-token options that must
        apply to both sides (LD-DPO's ``ld_alpha``) are applied here.

        Args:
            batch: The collated batch, in any layout.
            wpo_weights: Also compute WPO's per-sequence log-weights (the policy forward only).
        """
        return sequence_logps(
            self.policy,
            batch,
            ld_alpha=self.loss.ld_alpha,
            wpo_weights=wpo_weights,
            chunk_size=self.logps_chunk_size,
            response_only=self.response_only,
        )

    @property
    def response_only(self) -> bool:
        """Whether the response-only head scores the policy (probed at first use)."""
        if self._response_only is None:
            reason = None
            if self.response_head and self.logps_chunk_size is not None:
                reason = response_head_unsupported(self.policy)
                if reason is not None:
                    rank_zero_info(f"Response-only LM head off: {reason}; scoring the logits.")
                else:
                    rank_zero_info("Response-only LM head: on (exact on this model: probed).")
            self._response_only = bool(self.response_head and self.logps_chunk_size) and not reason
        return self._response_only

    def logps_settings(self) -> dict[str, float | bool | None]:
        """What, besides weights and data, changes the reference log-probs (cache key)."""
        return {
            "ld_alpha": self.loss.ld_alpha,
            "logps_chunk_size": self.logps_chunk_size,
            "response_head": self.response_only,
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
        loss = self._step_share(output.losses, batch.get(STEP_PAIRS_KEY))
        self._check_finite(output.losses.mean(), output)
        self._log_metrics("train", output, logps)
        return loss

    def _step_share(self, losses: Tensor, step_pairs: Tensor | None) -> Tensor:
        """This micro-batch's share of the optimizer step's pair-weighted mean loss.

        With ``step_pairs`` (the pairs of the whole optimizer step, over its micro-batches
        and ranks) every pair of the step weighs the same, whatever the packing, the
        micro-batch sizes or an epoch's short last window: Lightning divides the returned
        loss by ``accumulate_grad_batches`` and data parallelism averages the gradients over
        the ranks, so the sum is scaled back by both. Without it, the micro-batch's mean.
        """
        if step_pairs is None or self._trainer is None:
            return losses.mean()
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size
        return losses.sum() * (scale / step_pairs.to(losses.dtype))

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
        values = metric_values(output, logps)
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
        """Refuse a checkpoint of another model, or whose tensors differ from their fingerprints.

        Raises:
            CheckpointError: Naming the checkpoint and the first difference.
        """
        where = getattr(self._trainer, "ckpt_path", None) or "the checkpoint"
        if not check_resumable(checkpoint, self.state_dict(), str(where)):
            rank_zero_warn(f"{where} carries no fingerprints: its tensors load unverified.")
