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
from lightning_dpo.data.datamodule import PreferenceDataModule
from lightning_dpo.integrity import stamp_checkpoint
from lightning_dpo.losses import LossOutput, PairLogps, PreferenceLoss
from lightning_dpo.metrics import METRIC_NAMES, metric_values
from lightning_dpo.policy import shard_policy
from lightning_dpo.scoring import (
    DEFAULT_LOGPS_CHUNK_SIZE,
    ScoringPlan,
    SequenceLogps,
    check_chunk_size,
    pair_logps,
    resolve_plan,
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
            policy (probed once, with the layout: :meth:`plan_scoring`; otherwise the
            reason is logged and the model's own logits are scored). ``False``: always the
            model's logits.

    The :class:`~lightning_dpo.scoring.ScoringPlan` (layout, head, chunk size) is decided
    once: by ``train.py`` where it builds the objects (:meth:`plan_scoring`, then
    :meth:`connect` on the data module), or in :meth:`setup` under a Trainer of your own.
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
        check_chunk_size(logps_chunk_size)
        if not isinstance(loss, PreferenceLoss):
            raise TypeError(f"loss must be a PreferenceLoss, got {type(loss).__name__}")
        self.policy = policy
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.logps_chunk_size = logps_chunk_size
        self.response_head = response_head
        #: How batches are laid out and scored (:meth:`plan_scoring`), ``None`` until decided.
        self.plan: ScoringPlan | None = None
        self._policy_sharded = False
        self._last_finite: tuple[int, Tensor, Tensor] | None = None
        self._said_unstamped = False
        self.val_metrics = nn.ModuleDict(
            {name.replace("/", "_"): MeanMetric() for name in METRIC_NAMES}
        )

    def configure_model(self) -> None:
        """Shard the policy with FSDP2 when trained under ``ModelParallelStrategy``.

        See :func:`~lightning_dpo.policy.shard_policy`; under other strategies this does
        nothing. The reference snapshot then holds each rank's local shards only.
        """
        mesh = getattr(self, "_device_mesh", None)  # set by ModelParallelStrategy
        if mesh is None or self._policy_sharded:
            return
        shard_policy(self.policy, mesh["data_parallel"])
        self._policy_sharded = True

    def plan_scoring(self, layout: str = "auto") -> ScoringPlan:
        """Probe the policy once and keep its scoring plan (see :func:`resolve_plan`).

        Args:
            layout: The layout the data asks for (``data.batches.layout``: ``auto`` or a name).

        Returns:
            The plan, also kept as :attr:`plan`; hand it to the data module
            (:meth:`PreferenceDataModule.connect`).
        """
        self.plan = resolve_plan(self.policy, layout, self.response_head, self.logps_chunk_size)
        return self.plan

    def setup(self, stage: str) -> None:
        """Decide the scoring plan if not yet decided; check the data has what the loss needs.

        Under a Trainer of your own the plan is decided here, against the layout the
        :class:`~lightning_dpo.data.PreferenceDataModule` asks for, and handed to it (with
        data loaders of your own: ``padded``, or call :meth:`plan_scoring` with their layout
        before ``fit``). Runs before the strategy places or shards the policy, so the
        probe's forwards see the plain model.
        """
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        ours = datamodule if isinstance(datamodule, PreferenceDataModule) else None
        if self.plan is None:
            self.plan_scoring(ours.requested_layout if ours is not None else "padded")
        if ours is not None:  # each fit: a data module may serve several modules in turn
            ours.connect(plan=self.plan)
        if self.loss.requires_rewards and ours is not None:
            ours.require_fields(REWARD_FIELDS, reason=f"by loss {self.loss!r}")

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
        plan = self.plan if self.plan is not None else self.plan_scoring("padded")
        return sequence_logps(
            self.policy, batch, plan, ld_alpha=self.loss.ld_alpha, wpo_weights=wpo_weights
        )

    def logps_settings(self) -> dict[str, float | bool | None]:
        """What, besides weights and data, changes the reference log-probs (cache key)."""
        return {
            "ld_alpha": self.loss.ld_alpha,
            "logps_chunk_size": self.logps_chunk_size,
            "response_head": self.plan is not None and self.plan.response_only,
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
