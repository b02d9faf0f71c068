"""LoRA reference: the base model, reached by disabling the peft adapters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn

from lightning_dpo.policy import is_peft_model


class AdapterDisabledReference:
    """The bare base model of a peft policy, reached by disabling its adapters.

    No weights are copied: :meth:`peft.PeftModel.disable_adapter` routes the forward
    around the adapters and re-enables them on exit. Nothing is stored in checkpoints
    but the choice itself.
    """

    kind = "disable_adapters"
    nbytes = 0
    in_flight = False

    @contextmanager
    def reference(self, model: nn.Module) -> Iterator[None]:
        """Disable the adapters of the peft ``model`` for the body."""
        if not is_peft_model(model):
            raise TypeError(
                f"{type(model).__name__} is not a peft model: the adapter-disabled reference "
                "needs one (use the host snapshot for full-parameter training)"
            )
        with model.disable_adapter():
            yield

    def restore(self) -> None:
        """Nothing to restore: ``disable_adapter`` re-enables the adapters itself."""

    def update(self, model: nn.Module, alpha: float) -> None:
        """Refused: the bare base model cannot move (TR-DPO needs a snapshot of the adapter).

        Raises:
            TypeError: Always.
        """
        raise TypeError(
            "TR-DPO cannot update a reference that is the bare base model: use "
            "mode='auto' or 'snapshot', which keep a frozen copy of the adapter"
        )

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint state: only the choice."""
        return {"reference": self.kind}

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        policy: nn.Module,
        placement: object,
        where: str,
    ) -> AdapterDisabledReference:
        """The adapter-disabled reference a checkpoint recorded (nothing to restore or place)."""
        return cls()
