"""The callback that gives every batch its reference log-probs."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_dpo.batch import REFERENCE_LOGPS_KEY, WINDOW_KEY
from lightning_dpo.reference.cache.build import PairIndexedData
from lightning_dpo.reference.contract import ReferenceScoredModule, check_module
from lightning_dpo.reference.origins import ByAddress, cached_origin, fresh_origin, restored_origin
from lightning_dpo.reference.settings import ReferenceMode, check_settings
from lightning_dpo.reference.sources import LogpsSource, ReferenceScorer
from lightning_dpo.reference.strategies import check_supported_strategy, node_share
from lightning_dpo.reference.weights.base import WeightReference
from lightning_dpo.reference.weights.placement import SNAPSHOT_DTYPES, SnapshotPlacement, SwapMode
from lightning_dpo.wiring import Wired, Wiring


class ReferenceSwapCallback(Callback, Wired):
    r"""Compute reference log-probs for each batch, before the policy forward.

    The LightningModule must be a
    :class:`~lightning_dpo.reference.contract.ReferenceScoredModule`
    (:class:`~lightning_dpo.module.PreferenceModule` is one); this is checked in ``setup``.
    Before each training and validation step the callback runs its ``sequence_logps`` as
    the reference policy, under ``torch.no_grad()`` with dropout off and inside the
    precision plugin's forward context, and stores the result in
    ``batch["reference_logps"]`` (:data:`~lightning_dpo.batch.REFERENCE_LOGPS_KEY`).

    Modes (the weight reference, :attr:`weights`):

    - ``"snapshot"``: at fit start, once the strategy has placed the model, the trainable
      parameters (a shard's local part; a peft policy's adapter) are copied to host memory
      (:class:`~lightning_dpo.reference.weights.placement.SnapshotPlacement`: pinned on CUDA, once
      per node under DDP) and swapped into the live weights around each reference forward.
    - ``"disable_adapters"``: peft policy; the reference is the bare base model.
    - ``"auto"``: ``"disable_adapters"`` for a peft policy with a fresh adapter (``lora_B``
      all zero), else ``"snapshot"`` (reference = base + that adapter, or the weights).

    Under gradient accumulation the first micro-batch of a window (as
    ``PreferenceDataModule`` serves them) brings its optimizer step's others along: one
    swap per step. Checkpoints record the reference (:mod:`~lightning_dpo.reference.origins`):
    a snapshot's weights and fingerprint, or its pretrained source by address, or the
    cache's keys; a resumed run takes its reference from there, never from the resumed
    weights, and refuses a checkpoint without it or whose reference does not fit.

    Args:
        mode: Which reference to use, see above.
        snapshot_dtype: Keep the host snapshot in ``"bfloat16"`` or ``"float16"`` (half
            the host memory; the reference weights are rounded) or ``None`` (exact).
        swap_mode: ``"auto"``, ``"copy"`` or ``"exchange"``; see
            :class:`~lightning_dpo.reference.weights.snapshot.HostSnapshotReference`.
        sync_every: TR-DPO (Gorbatovski et al. 2024, https://arxiv.org/abs/2404.09656):
            every ``sync_every`` optimizer steps, move the reference towards the policy,
            ``ref <- (1 - sync_alpha) * ref + sync_alpha * policy``. ``None`` keeps the
            reference frozen. Needs a snapshot: with a fresh LoRA adapter the snapshot
            is a copy of the adapter (at its zero init, exactly the base model).
        sync_alpha: Mixing weight in ``(0, 1]``; ``1.0`` is a hard copy. For LoRA the
            factors ``A`` and ``B`` are mixed separately, exact for a hard copy but only
            approximately a mix of the two policies for ``alpha < 1``.
        logps_cache_dir: Precompute the reference log-probs of every train and validation
            pair at fit start (when the policy *is* the reference: no swap, no host
            snapshot) and keep them in this directory, keyed by the reference weights,
            the data and the log-prob settings; a later run with the same key (the next
            job of a sweep over ``loss`` and ``beta``) loads them and runs no reference
            forward at all. Not ``data.tokens.cache_dir``, which caches token ids.
        datamodule: The data the cache is computed over (``fingerprint(split)`` and
            ``ordered_dataloader(split)``, as ``PreferenceDataModule``); by default the
            datamodule given to ``fit``. See :meth:`connect`.
        share_snapshot: Under DDP with several processes per node, keep one host snapshot
            per node in shared memory (``/dev/shm``) mapped by its ranks, instead of one per
            rank (:mod:`~lightning_dpo.reference.node_share`). ``False``: one per rank.
        pretrained: The pretrained model the policy was loaded from (``model.pretrained``).
            When the snapshot is its unchanged weights (checked at fit start; one process,
            no TR-DPO), checkpoints name it by address instead of holding a copy
            (:mod:`~lightning_dpo.reference.weights.by_address`); resume rebuilds it from there.
        embed_snapshot: Keep the snapshot in every checkpoint even when it could be named
            by address: for checkpoints that will move without their pretrained source.
    """

    def __init__(
        self,
        mode: ReferenceMode = "auto",
        snapshot_dtype: str | None = None,
        swap_mode: SwapMode = "auto",
        sync_every: int | None = None,
        sync_alpha: float = 1.0,
        logps_cache_dir: str | None = None,
        datamodule: PairIndexedData | None = None,
        share_snapshot: bool = True,
        pretrained: str | None = None,
        embed_snapshot: bool = False,
    ) -> None:
        check_settings(mode, snapshot_dtype, swap_mode, sync_every, sync_alpha, logps_cache_dir)
        self.mode = mode
        self.snapshot_dtype = snapshot_dtype
        self.swap_mode = swap_mode
        self.sync_every = sync_every
        self.sync_alpha = sync_alpha
        self.logps_cache_dir = logps_cache_dir
        self.datamodule = datamodule
        self.share_snapshot = share_snapshot
        self.pretrained = pretrained
        self.embed_snapshot = embed_snapshot
        self._address: dict[str, Any] | None = None
        #: Where the reference log-probs come from (``None`` until ``fit`` starts).
        self.source: LogpsSource | None = None
        self._scorer: ReferenceScorer | None = None
        self._last_sync_step = 0
        self._restored_state: dict[str, Any] | None = None
        self._warned_unwindowed = False

    @property
    def weights(self) -> WeightReference | None:
        """The weight reference in use (``None`` before ``fit`` and with a cache)."""
        return None if self.source is None else self.source.weights

    @override
    def connect(self, wiring: Wiring) -> None:
        """Wire the data the reference cache is computed over (``train.py`` calls this)."""
        self.datamodule = wiring.datamodule

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(mode=self.mode)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the module is a ``ReferenceScoredModule`` and the strategy is supported."""
        check_module(pl_module)
        check_supported_strategy(trainer.strategy)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take the reference now, or, when resuming, from the checkpoint.

        Lightning restores the weights before this hook, so on resume the live model
        is the trained policy, not the reference.
        """
        self._scorer = ReferenceScorer.wired(trainer, pl_module)
        if self.source is None:
            self.source = self._source(trainer, pl_module, self._scorer)
        if self.sync_every is not None:
            rank_zero_info(
                f"TR-DPO: every {self.sync_every} optimizer steps the reference moves towards "
                f"the policy, ref <- {1 - self.sync_alpha:g} ref + {self.sync_alpha:g} policy."
            )

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Outside ``fit`` (``trainer.validate``), resolve the reference on first use."""
        if trainer.state.fn != TrainerFn.FITTING:
            self._scorer = ReferenceScorer.wired(trainer, pl_module)
        if self.source is None:
            self.source = self._source(trainer, pl_module, self._scorer)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach the reference log-probs to the training batch."""
        self._attach(trainer, pl_module, batch, "train")

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """TR-DPO: after every ``sync_every``-th optimizer step, update the reference."""
        step = trainer.global_step
        if self.sync_every is None or step == self._last_sync_step or step % self.sync_every:
            return
        assert self.source is not None
        self.source.update(pl_module.policy, self.sync_alpha)
        self._last_sync_step = step
        rank_zero_info(f"TR-DPO: reference updated after step {step}.")

    @override
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Attach the reference log-probs to the validation batch."""
        self._attach(trainer, pl_module, batch, "val")

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Second guard: restore the training weights if a swap is still in flight."""
        if self.weights is not None:
            self.weights.restore()

    @override
    def state_dict(self) -> dict[str, Any]:
        """The reference's checkpoint state (snapshot weights and fingerprint, or cache keys)."""
        if self.source is None:
            return {}
        state = self._address if self._address is not None else self.source.state_dict()
        return {**state, "last_sync_step": self._last_sync_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the stored reference for ``on_fit_start`` (or validation) to use."""
        self._restored_state = dict(state_dict) or None

    def _attach(self, trainer: pl.Trainer, module: Any, batch: Any, split: str) -> None:
        slot = batch.pop(WINDOW_KEY, None) if isinstance(batch, dict) else None
        if module.reference_free:  # the loss compares against zeros: no reference forward
            if slot is not None:
                slot.consume()
            return
        if self.source is None or self._scorer is None:
            raise RuntimeError("ReferenceSwapCallback has no reference yet: was fit started?")
        if slot is None and split == "train":
            self._warn_unwindowed(trainer)
        batch[REFERENCE_LOGPS_KEY] = self.source.logps(split, batch, slot, self._scorer)

    def _warn_unwindowed(self, trainer: pl.Trainer) -> None:
        if trainer.accumulate_grad_batches > 1 and not self._warned_unwindowed:
            self._warned_unwindowed = True
            rank_zero_info(
                f"accumulate_grad_batches={trainer.accumulate_grad_batches}, but the training "
                "batches come one at a time: one reference swap per micro-batch. "
                "PreferenceDataModule's BatchSettings(step_windows=True) (or a "
                "WindowedDataLoader) gives one swap per optimizer step."
            )

    def _source(
        self, trainer: pl.Trainer, module: ReferenceScoredModule, scorer: ReferenceScorer
    ) -> LogpsSource:
        """The reference of this run: from the checkpoint, the cache, or the policy now."""
        address = ByAddress(self.pretrained, self.embed_snapshot, self.snapshot_dtype)
        if self._restored_state is not None or trainer.ckpt_path is not None:
            state, self._restored_state = self._restored_state, None
            placement, where = self._placement(trainer, module.policy), str(trainer.ckpt_path)
            cache = self.logps_cache_dir
            origin = restored_origin(
                state, where, module.policy, placement, self.mode, cache, address
            )
        elif self.logps_cache_dir is not None:
            data = self.datamodule if self.datamodule is not None else trainer.datamodule
            origin = cached_origin(trainer, module, data, self.logps_cache_dir, scorer)
        else:
            placement = self._placement(trainer, module.policy)
            moving = self.sync_every is not None
            world = trainer.world_size
            origin = fresh_origin(module.policy, self.mode, placement, moving, address, world)
        self._address, self._last_sync_step = origin.address, origin.last_sync_step
        return origin.source

    def _placement(self, trainer: pl.Trainer, policy: nn.Module) -> SnapshotPlacement:
        """How this run keeps a host snapshot: decided here only, alike at start and resume."""
        share = node_share(trainer) if self.share_snapshot else None
        dtype = SNAPSHOT_DTYPES[self.snapshot_dtype]
        return SnapshotPlacement.decide(policy, dtype, self.swap_mode, share)
