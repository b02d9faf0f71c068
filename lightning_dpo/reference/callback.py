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
from lightning_dpo.errors import CheckpointError
from lightning_dpo.integrity import is_sharded
from lightning_dpo.reference.by_address import KIND, address_state, snapshot_from_address
from lightning_dpo.reference.cache_build import (
    PairIndexedData,
    Share,
    build_cached_source,
    gather_from_ranks,
    load_cached_source,
)
from lightning_dpo.reference.cache_store import (
    ReferenceLogpsCache,
    model_fingerprint,
)
from lightning_dpo.reference.contract import ReferenceScoredModule, check_module
from lightning_dpo.reference.host_snapshot import HostSnapshotReference, SwapMode
from lightning_dpo.reference.node_share import NodeShare
from lightning_dpo.reference.selection import (
    fresh_weights,
    missing_state,
    resolve_mode,
    weights_from_state,
)
from lightning_dpo.reference.settings import SNAPSHOT_DTYPES, ReferenceMode, check_settings
from lightning_dpo.reference.sources import CachedSource, LogpsSource, ReferenceScorer, SwapSource
from lightning_dpo.reference.strategies import check_supported_strategy, node_share
from lightning_dpo.reference.weights import WeightReference
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

    - ``"snapshot"``: in ``on_fit_start``, after the strategy has placed the model, the
      trainable parameters (a shard's local part) are copied to host memory (pinned on
      CUDA; once per node under DDP); each reference forward swaps them into the live
      weights and restores the training weights in a ``finally``. For a peft policy this
      is a frozen copy of the initial adapter (small).
    - ``"disable_adapters"``: peft policy; the reference is the bare base model, reached
      by disabling the adapters; nothing is copied.
    - ``"auto"``: a peft policy whose adapter is fresh (``lora_B`` all zero) gets
      ``"disable_adapters"``; one that starts from a trained adapter gets
      ``"snapshot"`` (reference = base + that adapter); any other model ``"snapshot"``.

    Gradient accumulation: the first micro-batch of a window
    (:class:`~lightning_dpo.data.windows.PlannedDataLoader`, as ``PreferenceDataModule``
    serves them) brings its optimizer step's other micro-batches along, and all their
    reference log-probs are computed inside one swap. Other batches get one swap each.

    Checkpoints: the state records the reference and, for a snapshot, its weights and
    fingerprint (one extra copy of the *trainable* parameters), or, when the snapshot is
    the unchanged weights of ``pretrained``, that source and the fingerprint (by address).
    A resumed run takes its reference from there, never from the resumed weights; a
    checkpoint without that state, whose snapshot does not fit the model, or whose source
    no longer matches, is refused.

    Args:
        mode: Which reference to use, see above.
        snapshot_dtype: Keep the host snapshot in ``"bfloat16"`` or ``"float16"`` (half
            the host memory; the reference weights are rounded) or ``None`` (exact).
        swap_mode: ``"auto"``, ``"copy"`` or ``"exchange"``; see
            :class:`~lightning_dpo.reference.host_snapshot.HostSnapshotReference`.
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
            forward at all. Not ``data.cache_dir``, which caches token ids.
        datamodule: The data the cache is computed over (``fingerprint(split)`` and
            ``ordered_dataloader(split)``, as ``PreferenceDataModule``); by default the
            datamodule given to ``fit``. See :meth:`connect`.
        share_snapshot: Under DDP with several processes per node, keep one host snapshot
            per node in shared memory (``/dev/shm``) mapped by its ranks, instead of one per
            rank (:mod:`~lightning_dpo.reference.node_share`). ``False``: one per rank.
        pretrained: The pretrained model the policy was loaded from (``model.pretrained``).
            When the snapshot is its unchanged weights (checked at fit start; one process,
            no TR-DPO), checkpoints name it by address instead of holding a copy
            (:mod:`~lightning_dpo.reference.by_address`); resume rebuilds it from there.
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
        check_settings(mode, snapshot_dtype, sync_every, sync_alpha, logps_cache_dir)
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
                "PreferenceDataModule(reference_windows=True) (or a WindowedDataLoader) "
                "gives one swap per optimizer step."
            )

    def _source(
        self, trainer: pl.Trainer, module: ReferenceScoredModule, scorer: ReferenceScorer
    ) -> LogpsSource:
        """The reference of this run: from the checkpoint, the cache, or the policy now."""
        if self._restored_state is not None or trainer.ckpt_path is not None:
            return self._restored_source(str(trainer.ckpt_path), module, trainer)
        if self.logps_cache_dir is not None:
            return self._cached_source(trainer, module, scorer)
        moving = self.sync_every is not None
        mode = resolve_mode(self.mode, module.policy, moving_reference=moving)
        dtype = SNAPSHOT_DTYPES[self.snapshot_dtype]
        share = self._node_share(trainer)
        weights = fresh_weights(module.policy, mode, dtype, self.swap_mode, share)
        if self._by_address(weights, module.policy, trainer.world_size):
            self._address = address_state(str(self.pretrained), weights, self.snapshot_dtype)
            said = "name it by address:" if self._address else "embed it; it differs from"
            rank_zero_info(f"Reference snapshot: checkpoints {said} {self.pretrained}")
        return SwapSource(weights)

    def _by_address(self, weights: WeightReference, policy: nn.Module, world_size: int) -> bool:
        """Whether checkpoints may name the fresh snapshot ``weights`` by its source.

        One process, a frozen reference (no TR-DPO), a host snapshot of unsharded weights,
        a source named and not ``embed_snapshot``.
        """
        if self.pretrained is None or self.embed_snapshot or self.sync_every is not None:
            return False
        sharded = any(is_sharded(param) for param in policy.parameters())
        return world_size == 1 and not sharded and isinstance(weights, HostSnapshotReference)

    def _node_share(self, trainer: pl.Trainer) -> NodeShare | None:
        """One host snapshot per node under DDP (``share_snapshot``), else ``None``."""
        return node_share(trainer) if self.share_snapshot else None

    def _cached_source(
        self, trainer: pl.Trainer, module: ReferenceScoredModule, scorer: ReferenceScorer
    ) -> CachedSource:
        data = self.datamodule if self.datamodule is not None else trainer.datamodule
        if not isinstance(data, PairIndexedData):
            raise TypeError(
                "logps_cache_dir needs data with fingerprint(split) and ordered_dataloader("
                "split), such as lightning_dpo.PreferenceDataModule: pass it to fit, or as "
                "ReferenceSwapCallback(datamodule=...)"
            )

        settings = {**module.logps_settings(), "precision": str(trainer.precision)}
        store, reference = (
            ReferenceLogpsCache(self.logps_cache_dir),
            model_fingerprint(module.policy),
        )
        share = Share(trainer.global_rank, trainer.world_size, gather_from_ranks)
        source = build_cached_source(store, reference, data, settings, scorer.pair_chunks, share)
        trainer.strategy.barrier("reference_cache")
        return source

    def _restored_source(
        self, where: str, module: ReferenceScoredModule, trainer: pl.Trainer
    ) -> LogpsSource:
        state, self._restored_state = self._restored_state, None
        if not state:
            raise missing_state(where, self.mode)
        if state["reference"] == "cache":
            if self.logps_cache_dir is None:
                raise CheckpointError(
                    f"{where} used a reference cache: set "
                    "callbacks.reference.logps_cache_dir to resume"
                )
            return load_cached_source(
                ReferenceLogpsCache(self.logps_cache_dir), state["cache_keys"]
            )
        self._last_sync_step = state.get("last_sync_step", 0)
        if state["reference"] == KIND:
            path = self.pretrained if self.pretrained is not None else state["source"]
            weights = snapshot_from_address(state, path, module.policy, self.swap_mode, where)
            rank_zero_info(f"Reference policy (snapshot) rebuilt from {path}, fingerprint checked.")
            if not self.embed_snapshot:  # later checkpoints name it too, unless told not to
                self._address = {k: v for k, v in state.items() if k != "last_sync_step"}
                self._address["source"] = path
            return SwapSource(weights)
        share = self._node_share(trainer)
        weights = weights_from_state(state, module.policy, self.swap_mode, where, share)
        return SwapSource(weights)
