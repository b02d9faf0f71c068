"""The callback that gives every batch its reference log-probs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_dpo.data.windows import WINDOW_KEY, WindowSlot
from lightning_dpo.reference import (
    HostSnapshotReference,
    ReferenceStrategy,
    SwapMode,
    reference_context,
)
from lightning_dpo.reference_cache import CachedReference, build_cached_reference
from lightning_dpo.reference_setup import (
    build_reference,
    reference_state,
    resolve_mode,
    strategy_from_state,
)
from lightning_dpo.strategies import check_supported_strategy

REFERENCE_LOGPS_KEY = "reference_logps"
"""Batch key under which the callback stores the ``[2B]`` reference log-probs."""

ReferenceMode = Literal["auto", "snapshot", "disable_adapters"]
_MODES = ("auto", "snapshot", "disable_adapters")
_SNAPSHOT_DTYPES = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ReferenceSwapCallback(Callback):
    r"""Compute reference log-probs for each batch, before the policy forward.

    The LightningModule must expose ``policy`` (the ``nn.Module`` being trained) and
    ``sequence_logps(batch)`` returning per-row summed log-probs
    (:class:`~lightning_dpo.module.PreferenceModule` does). Before each training and
    validation step the callback runs that forward as the reference policy, under
    ``torch.no_grad()`` with dropout off and inside the precision plugin's forward
    context, and stores the result in ``batch["reference_logps"]``.

    Modes:

    - ``"snapshot"``: in ``on_fit_start``, after the strategy has placed the model, the
      trainable parameters (a shard's local part) are copied to host memory (pinned on
      CUDA); each reference forward swaps them into the live weights and restores the
      training weights in a ``finally``. For a peft policy the trainable parameters are
      the adapter's, so this is a frozen copy of the initial adapter (small).
    - ``"disable_adapters"``: peft policy; the reference is the bare base model, reached
      by disabling the adapters; nothing is copied.
    - ``"auto"``: a peft policy whose adapter is fresh (``lora_B`` all zero) gets
      ``"disable_adapters"``; one that starts from a trained adapter gets
      ``"snapshot"`` (reference = base + that adapter); any other model ``"snapshot"``.

    Gradient accumulation: when the training batches come from a
    :class:`~lightning_dpo.data.windows.WindowedDataLoader` (``PreferenceDataModule`` uses
    one when ``accumulate_grad_batches > 1``), the first micro-batch of each optimizer step
    brings the step's other micro-batches along, and their reference log-probs are all
    computed inside one swap, one micro-batch forward at a time; the later micro-batches
    then only pick theirs up. Other batches get one swap each.

    Checkpoints: the callback state records the mode chosen and, in snapshot mode, the
    reference weights and their fingerprint (one extra copy of the *trainable* parameters in
    the checkpoint; nothing for ``"disable_adapters"``). A resumed run takes its
    reference from there, never from the resumed (trained) weights; a checkpoint
    without that state, or whose snapshot does not fit the model, is refused.

    Args:
        mode: Which reference to use, see above.
        snapshot_dtype: Keep the host snapshot in ``"bfloat16"`` or ``"float16"`` (half
            the host memory; the reference weights are rounded) or ``None`` (exact).
        swap_mode: ``"auto"``, ``"copy"`` or ``"exchange"``; see
            :class:`~lightning_dpo.reference.HostSnapshotReference`.
        sync_every: TR-DPO (Gorbatovski et al. 2024, https://arxiv.org/abs/2404.09656):
            every ``sync_every`` optimizer steps, move the reference towards the policy,
            ``ref <- (1 - sync_alpha) * ref + sync_alpha * policy``. ``None`` keeps the
            reference frozen. Needs a snapshot: with a fresh LoRA adapter the snapshot
            is a copy of the adapter (at its zero init, exactly the base model).
        sync_alpha: Mixing weight in ``(0, 1]``; ``1.0`` is a hard copy. For LoRA the
            factors ``A`` and ``B`` are mixed separately, which is exact for a hard copy
            but only approximately a mix of the two policies for ``alpha < 1``.
        cache_dir: Precompute the reference log-probs of every train and validation pair
            at fit start (when the policy *is* the reference: no swap, no host snapshot)
            and keep them in this directory, keyed by the reference weights, the data
            and the log-prob settings; a later run with the same key (e.g. the next job
            of a sweep over ``loss`` and ``beta``) loads them and runs no reference
            forward at all. Needs a datamodule with ``fingerprint(split)`` and
            ``ordered_dataloader(split)`` (``PreferenceDataModule``).
    """

    def __init__(
        self,
        mode: ReferenceMode = "auto",
        snapshot_dtype: str | None = None,
        swap_mode: SwapMode = "auto",
        sync_every: int | None = None,
        sync_alpha: float = 1.0,
        cache_dir: str | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"ReferenceSwapCallback mode must be one of {_MODES}, got {mode!r}")
        if snapshot_dtype not in _SNAPSHOT_DTYPES:
            raise ValueError(
                f"snapshot_dtype must be one of {list(_SNAPSHOT_DTYPES)}, got {snapshot_dtype!r}"
            )
        if sync_every is not None and (not isinstance(sync_every, int) or sync_every < 1):
            raise ValueError(f"sync_every must be a positive integer or None, got {sync_every!r}")
        if not 0.0 < sync_alpha <= 1.0:
            raise ValueError(f"sync_alpha must be in (0, 1], got {sync_alpha!r}")
        if sync_every is not None and mode == "disable_adapters":
            raise ValueError(
                "TR-DPO (sync_every) cannot update a reference that is the bare base model "
                "(mode='disable_adapters'): use mode='auto' or 'snapshot', which keep a "
                "frozen copy of the adapter as the reference"
            )
        if cache_dir is not None and sync_every is not None:
            raise ValueError(
                "cache_dir (a fixed precomputed reference) and sync_every (TR-DPO, a moving "
                "reference) exclude each other: set one of them to null"
            )
        self.cache_dir = cache_dir
        self.sync_every = sync_every
        self.sync_alpha = sync_alpha
        self._last_sync_step = 0
        self.mode = mode
        self.snapshot_dtype = snapshot_dtype
        self.swap_mode = swap_mode
        self.strategy: ReferenceStrategy | None = None
        #: Reference brackets (swaps in and out) run so far, the cache pass excluded.
        self.brackets = 0
        self._reference_version = 0
        self._restored_state: dict[str, Any] | None = None
        self._warned_unwindowed = False

    @property
    def cache_hits(self) -> int:
        """Splits whose reference log-probs were loaded from the cache (0 without one)."""
        return getattr(self.strategy, "hits", 0)

    @property
    def cache_misses(self) -> int:
        """Splits whose reference log-probs were computed for the cache (0 without one)."""
        return getattr(self.strategy, "misses", 0)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(mode=self.mode)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the module exposes what the reference forward needs, and the strategy."""
        for attribute in ("policy", "sequence_logps"):
            if not hasattr(pl_module, attribute):
                raise TypeError(
                    f"ReferenceSwapCallback needs the LightningModule to define `{attribute}` "
                    f"(as lightning_dpo.PreferenceModule does); {type(pl_module).__name__} lacks it"
                )
        check_supported_strategy(trainer.strategy)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take the reference now, or, when resuming, from the checkpoint.

        Lightning restores the weights before this hook, so on resume the live model
        is the trained policy, not the reference.
        """
        if self.strategy is not None:
            return
        if trainer.ckpt_path is not None:
            self.strategy = self._strategy_from_checkpoint(trainer, pl_module)
        elif self.cache_dir is not None:

            def forward(batch: dict[str, Any]) -> Any:
                batch = trainer.strategy.batch_to_device(batch)
                return self._reference_logps(trainer, pl_module, [batch], strategy=None)[0]

            self.strategy = build_cached_reference(trainer, pl_module, self.cache_dir, forward)
        else:
            self.strategy = self._build_strategy(pl_module)
        if self.sync_every is not None:
            rank_zero_info(
                f"TR-DPO: every {self.sync_every} optimizer steps the reference moves towards "
                f"the policy, ref <- {1 - self.sync_alpha:g} ref + {self.sync_alpha:g} policy."
            )

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Outside ``fit`` (``trainer.validate``), resolve the reference on first use."""
        if self.strategy is None:
            if self._restored_state is not None:
                self.strategy = self._strategy_from_checkpoint(trainer, pl_module)
            else:
                self.strategy = self._build_strategy(pl_module)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach the reference log-probs to the training batch."""
        self._attach_reference_logps(trainer, pl_module, batch, "train")

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
        assert isinstance(self.strategy, HostSnapshotReference)
        self.strategy.update(pl_module.policy, self.sync_alpha)
        self._last_sync_step = step
        self._reference_version += 1
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
        self._attach_reference_logps(trainer, pl_module, batch, "val")

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Second guard: restore the training weights if a swap is still in flight."""
        if self.strategy is not None:
            self.strategy.restore()

    @override
    def state_dict(self) -> dict[str, Any]:
        """The resolved mode and, in snapshot mode, the reference weights and their hash."""
        return reference_state(self.strategy, self._last_sync_step)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the stored reference for ``on_fit_start`` (or validation) to use."""
        self._restored_state = dict(state_dict) or None

    def _attach_reference_logps(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, split: str
    ) -> None:
        slot = batch.pop(WINDOW_KEY, None) if isinstance(batch, dict) else None
        if isinstance(slot, WindowSlot):  # consumed: drop the window's hold on this batch
            slot.window.batches[slot.position] = None
        if getattr(getattr(pl_module, "loss", None), "reference_free", False):
            return  # the loss compares against zeros: no reference forward at all
        if self.strategy is None:
            raise RuntimeError("ReferenceSwapCallback has no reference yet: was fit started?")
        if isinstance(self.strategy, CachedReference):
            if "pair_index" not in batch:
                raise KeyError("the reference cache needs `pair_index` in every batch")
            batch[REFERENCE_LOGPS_KEY] = self.strategy.lookup(split, batch["pair_index"])
            return
        if isinstance(slot, WindowSlot):
            batch[REFERENCE_LOGPS_KEY] = self._window_reference_logps(
                trainer, pl_module, batch, slot
            )
            return
        if split == "train":
            self._warn_unwindowed(trainer)
        batch[REFERENCE_LOGPS_KEY] = self._reference_logps(
            trainer, pl_module, [batch], self.strategy
        )[0]

    def _window_reference_logps(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, slot: WindowSlot
    ) -> Any:
        """This micro-batch's reference log-probs, computing its window's in one bracket.

        The first micro-batch of a window to arrive (or the first after a TR-DPO update)
        computes its own and every later micro-batch's log-probs; the others pick theirs
        up. Consumed entries are dropped, so the window holds nothing once done.
        """
        window, position = slot.window, slot.position
        stale = window.reference_version != self._reference_version
        if stale or window.reference_logps[position] is None:

            def device_batches() -> Iterable[Any]:
                yield batch
                for later in window.batches[position + 1 :]:
                    yield trainer.strategy.batch_to_device(later)

            window.reference_logps[position:] = self._reference_logps(
                trainer, pl_module, device_batches(), self.strategy
            )
            window.reference_version = self._reference_version
        logps = window.reference_logps[position]
        window.reference_logps[position] = None
        return logps

    def _warn_unwindowed(self, trainer: pl.Trainer) -> None:
        if trainer.accumulate_grad_batches > 1 and not self._warned_unwindowed:
            self._warned_unwindowed = True
            rank_zero_info(
                f"accumulate_grad_batches={trainer.accumulate_grad_batches}, but the training "
                "batches come one at a time: one reference swap per micro-batch. "
                "PreferenceDataModule(reference_windows=True) (or a WindowedDataLoader) "
                "gives one swap per optimizer step."
            )

    def _reference_logps(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batches: Iterable[Any],
        strategy: ReferenceStrategy | None,
    ) -> list[Any]:
        """``[2B]`` reference log-probs of each device batch, all inside one bracket.

        ``strategy=None``: the live model is the reference, nothing is swapped. The
        batches are drawn one at a time inside the bracket, so only one batch's forward
        is alive at once.
        """
        with (
            trainer.precision_plugin.forward_context(),
            reference_context(strategy, pl_module.policy),
        ):
            logps = [pl_module.sequence_logps(batch).sums.detach() for batch in batches]
        self.brackets += strategy is not None
        return logps

    def _build_strategy(self, pl_module: pl.LightningModule) -> ReferenceStrategy:
        policy = pl_module.policy
        mode = resolve_mode(self.mode, policy, moving_reference=self.sync_every is not None)
        dtype = _SNAPSHOT_DTYPES[self.snapshot_dtype]
        return build_reference(policy, mode, dtype, self.swap_mode)

    def _strategy_from_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> ReferenceStrategy:
        state, self._restored_state = self._restored_state, None
        strategy = strategy_from_state(
            state,
            pl_module.policy,
            ckpt_path=trainer.ckpt_path,
            mode=self.mode,
            swap_mode=self.swap_mode,
            cache_dir=self.cache_dir,
        )
        if isinstance(strategy, HostSnapshotReference):
            self._last_sync_step = state.get("last_sync_step", 0)
        return strategy
