"""The callback that gives every batch its reference log-probs."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_dpo.reference import (
    AdapterDisabledReference,
    HostSnapshotReference,
    ReferenceStrategy,
    reference_context,
)

REFERENCE_LOGPS_KEY = "reference_logps"
"""Batch key under which the callback stores the ``[2B]`` reference log-probs."""

ReferenceMode = Literal["auto", "snapshot", "adapter"]
_MODES = ("auto", "snapshot", "adapter")


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft model whose adapters can be disabled."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


class ReferenceSwapCallback(Callback):
    r"""Compute reference log-probs for each batch, before the policy forward.

    The LightningModule must expose ``policy`` (the ``nn.Module`` being trained) and
    ``sequence_logps(batch)`` returning per-row summed log-probs
    (:class:`~lightning_dpo.module.PreferenceModule` does). Before each training and
    validation step the callback runs that forward as the reference policy, under
    ``torch.no_grad()`` with dropout off and inside the precision plugin's forward
    context, and stores the result in ``batch["reference_logps"]``.

    Strategies (``mode``):

    - ``"snapshot"``: full-parameter training. In ``on_fit_start``, after the strategy
      has placed the model, the trainable parameters are copied to host memory
      (pinned on CUDA); each reference forward swaps them into the live weights in
      place and restores the training weights in a ``finally``.
    - ``"adapter"``: peft/LoRA training. The reference is the base model, reached by
      disabling the adapters; nothing is copied.
    - ``"auto"``: ``"adapter"`` for a peft policy, else ``"snapshot"``.

    Checkpoints: in snapshot mode the callback state stores the reference weights
    (one extra copy of the trainable parameters in the checkpoint file), so a resumed
    run uses the *initial* reference rather than a snapshot of the resumed weights.
    Resuming from a checkpoint without that state fails loudly.

    Args:
        mode: Which reference strategy to use.
    """

    def __init__(self, mode: ReferenceMode = "auto") -> None:
        if mode not in _MODES:
            raise ValueError(f"ReferenceSwapCallback mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.strategy: ReferenceStrategy | None = None
        self._restored_snapshot: dict | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(mode=self.mode)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check that the module exposes what the reference forward needs."""
        for attribute in ("policy", "sequence_logps"):
            if not hasattr(pl_module, attribute):
                raise TypeError(
                    f"ReferenceSwapCallback needs the LightningModule to define `{attribute}` "
                    f"(as lightning_dpo.PreferenceModule does); {type(pl_module).__name__} lacks it"
                )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Snapshot the reference now, unless the run resumes from a checkpoint.

        Lightning restores the weights before this hook, so on resume the live model
        is the trained policy, not the reference: the snapshot then comes from the
        checkpoint's callback state instead.
        """
        if self.strategy is not None:
            return
        if trainer.ckpt_path is not None and self._resolved_mode(pl_module) == "snapshot":
            self.strategy = self._strategy_from_checkpoint(trainer, pl_module)
            return
        self.strategy = self._build_strategy(pl_module)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Outside ``fit`` (``trainer.validate``), resolve the reference on first use."""
        if self.strategy is None:
            if self._restored_snapshot is not None:
                self.strategy = self._strategy_from_checkpoint(trainer, pl_module)
            else:
                self.strategy = self._build_strategy(pl_module)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach the reference log-probs to the training batch."""
        self._attach_reference_logps(trainer, pl_module, batch)

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
        self._attach_reference_logps(trainer, pl_module, batch)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Second guard: restore the training weights if a swap is still in flight."""
        if self.strategy is not None:
            self.strategy.restore()

    @override
    def state_dict(self) -> dict[str, Any]:
        """Store the mode and, in snapshot mode, the reference weights (host tensors)."""
        state: dict[str, Any] = {"mode": self.mode}
        if isinstance(self.strategy, HostSnapshotReference):
            state["reference_snapshot"] = self.strategy.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the stored reference weights for ``on_fit_start`` to use."""
        self._restored_snapshot = state_dict.get("reference_snapshot")

    def _attach_reference_logps(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any
    ) -> None:
        if self.strategy is None:
            raise RuntimeError("ReferenceSwapCallback has no reference yet: was fit started?")
        with (
            trainer.precision_plugin.forward_context(),
            reference_context(self.strategy, pl_module.policy),
        ):
            reference = pl_module.sequence_logps(batch).sums
        batch[REFERENCE_LOGPS_KEY] = reference.detach()

    def _resolved_mode(self, pl_module: pl.LightningModule) -> str:
        if self.mode != "auto":
            return self.mode
        return "adapter" if is_peft_model(pl_module.policy) else "snapshot"

    def _build_strategy(self, pl_module: pl.LightningModule) -> ReferenceStrategy:
        if self._resolved_mode(pl_module) == "adapter":
            if not is_peft_model(pl_module.policy):
                raise TypeError("mode='adapter' needs a peft policy (model=lora)")
            rank_zero_info("Reference policy: the base model, with the LoRA adapters disabled.")
            return AdapterDisabledReference()
        strategy = HostSnapshotReference.capture(pl_module.policy)
        rank_zero_info(
            f"Reference policy: host snapshot of {len(strategy.snapshot)} trainable tensors "
            f"({strategy.nbytes / 2**20:.1f} MiB{', pinned' if strategy.pin_memory else ''})."
        )
        return strategy

    def _strategy_from_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> HostSnapshotReference:
        if self._restored_snapshot is None:
            raise RuntimeError(
                f"Resuming from {trainer.ckpt_path!r}, but the checkpoint holds no reference "
                "snapshot from ReferenceSwapCallback: the live weights are the trained policy, "
                "not the reference, so training cannot continue correctly. Resume from a "
                "checkpoint written with ReferenceSwapCallback(mode='snapshot' or 'auto')."
            )
        pin = any(param.is_cuda for param in pl_module.policy.parameters())
        strategy = HostSnapshotReference(self._restored_snapshot, pin_memory=pin)
        self._restored_snapshot = None
        rank_zero_info("Reference policy: host snapshot restored from the checkpoint.")
        return strategy
