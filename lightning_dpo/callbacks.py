"""The callback that gives every batch its reference log-probs."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_dpo.reference import (
    AdapterDisabledReference,
    HostSnapshotReference,
    ReferenceStrategy,
    SwapMode,
    reference_context,
    snapshot_fingerprint,
)
from lightning_dpo.reference_cache import (
    CachedReference,
    build_cached_reference,
    load_cached_reference,
)
from lightning_dpo.strategies import check_supported_strategy

REFERENCE_LOGPS_KEY = "reference_logps"
"""Batch key under which the callback stores the ``[2B]`` reference log-probs."""

ReferenceMode = Literal["auto", "snapshot", "disable_adapters"]
_MODES = ("auto", "snapshot", "disable_adapters")
_SNAPSHOT_DTYPES = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft model whose adapters can be disabled."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def has_trained_adapter(model: nn.Module) -> bool:
    """Whether a peft model's LoRA adapters are away from their zero init (``B != 0``).

    peft initialises ``lora_B`` to zeros, so a fresh adapter is the identity on the
    base model; any non-zero ``lora_B`` means the adapter was loaded or trained.
    """
    return any(
        "lora_B" in name and bool(param.detach().ne(0).any())
        for name, param in model.named_parameters()
    )


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

    Checkpoints: the callback state records the mode chosen and, in snapshot mode, the
    reference weights and their SHA-256 (one extra copy of the *trainable* parameters in
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
        self._restored_state: dict[str, Any] | None = None

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
                return self._reference_logps(trainer, pl_module, batch, strategy=None)

            self.strategy = build_cached_reference(trainer, pl_module, self.cache_dir, forward)
        else:
            self.strategy = self._build_strategy(pl_module)

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
        if self.strategy is None:
            return {}
        if isinstance(self.strategy, CachedReference):
            return {"reference": "cache", "cache_keys": dict(self.strategy.keys)}
        if isinstance(self.strategy, HostSnapshotReference):
            return {
                "reference": "snapshot",
                "reference_snapshot": self.strategy.state_dict(),
                "fingerprint": self.strategy.fingerprint,
                "last_sync_step": self._last_sync_step,
            }
        return {"reference": "disable_adapters"}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the stored reference for ``on_fit_start`` (or validation) to use."""
        self._restored_state = dict(state_dict) or None

    def _attach_reference_logps(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, split: str
    ) -> None:
        if getattr(getattr(pl_module, "loss", None), "reference_free", False):
            return  # the loss compares against zeros: no reference forward at all
        if self.strategy is None:
            raise RuntimeError("ReferenceSwapCallback has no reference yet: was fit started?")
        if isinstance(self.strategy, CachedReference):
            if "pair_index" not in batch:
                raise KeyError("the reference cache needs `pair_index` in every batch")
            batch[REFERENCE_LOGPS_KEY] = self.strategy.lookup(split, batch["pair_index"])
            return
        batch[REFERENCE_LOGPS_KEY] = self._reference_logps(trainer, pl_module, batch, self.strategy)

    @staticmethod
    def _reference_logps(
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        strategy: ReferenceStrategy | None,
    ) -> Any:
        """``[2B]`` reference log-probs of a device batch (``strategy=None``: no swap)."""
        with (
            trainer.precision_plugin.forward_context(),
            reference_context(strategy, pl_module.policy),
        ):
            return pl_module.sequence_logps(batch).sums.detach()

    def _resolved_mode(self, policy: nn.Module) -> str:
        if self.mode != "auto":
            return self.mode
        if self.sync_every is not None:
            return "snapshot"
        if is_peft_model(policy) and not has_trained_adapter(policy):
            return "disable_adapters"
        return "snapshot"

    def _build_strategy(self, pl_module: pl.LightningModule) -> ReferenceStrategy:
        policy = pl_module.policy
        if self._resolved_mode(policy) == "disable_adapters":
            if not is_peft_model(policy):
                raise TypeError("mode='disable_adapters' needs a peft policy (model=lora)")
            if has_trained_adapter(policy):
                rank_zero_info(
                    "Reference policy: the bare base model, although the adapter is not at "
                    "its initialisation (mode='disable_adapters' was chosen explicitly)."
                )
            else:
                rank_zero_info("Reference policy: the base model, with the adapters disabled.")
            return AdapterDisabledReference()
        strategy = HostSnapshotReference.capture(
            policy, _SNAPSHOT_DTYPES[self.snapshot_dtype], self.swap_mode
        )
        what = "the trained adapter" if is_peft_model(policy) else "the trainable weights"
        rank_zero_info(
            f"Reference policy: host snapshot of {what}, {len(strategy.snapshot)} tensors "
            f"({strategy.nbytes / 2**20:.2f} MiB per rank"
            f"{', pinned' if strategy.pin_memory else ''})."
        )
        return strategy

    def _strategy_from_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> ReferenceStrategy:
        state, self._restored_state = self._restored_state, None
        if not state:
            raise RuntimeError(
                f"Resuming from {trainer.ckpt_path!r}, but the checkpoint holds no "
                f"ReferenceSwapCallback(mode={self.mode!r}) state: the live weights are the "
                "trained policy, not the reference, so training cannot continue correctly. "
                "Resume from a checkpoint written with the same ReferenceSwapCallback mode."
            )
        if state["reference"] == "cache":
            if self.cache_dir is None:
                raise RuntimeError("the checkpoint used a reference cache: set cache_dir to resume")
            return load_cached_reference(self.cache_dir, state["cache_keys"])
        if state["reference"] == "disable_adapters":
            rank_zero_info("Reference policy (from checkpoint): base model, adapters disabled.")
            return AdapterDisabledReference()
        self._last_sync_step = state.get("last_sync_step", 0)
        snapshot = state["reference_snapshot"]
        if snapshot_fingerprint(snapshot) != state["fingerprint"]:
            raise RuntimeError(
                f"the reference snapshot in {trainer.ckpt_path!r} does not match its "
                "SHA-256 fingerprint: the checkpoint is corrupt"
            )
        pin = any(param.is_cuda for param in pl_module.policy.parameters())
        strategy = HostSnapshotReference(snapshot, pin_memory=pin, swap_mode=self.swap_mode)
        strategy.check_compatible(pl_module.policy)
        rank_zero_info("Reference policy: host snapshot restored from the checkpoint.")
        return strategy
