"""Export the trained policy in Hugging Face format at the end of ``fit``."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from typing_extensions import override

from lightning_dpo.policy import is_peft_model
from lightning_dpo.reference.weights.base import HasWeights
from lightning_dpo.wiring import Wired, Wiring

BASE_MODEL_SUBDIR = "base_model"
"""Where an adapter export keeps its base model when the base is not on disk already."""


def _base_on_disk(policy: nn.Module) -> bool:
    """Whether the peft policy's base model is a loadable directory on disk (``config.json``).

    A base read straight from a GGUF file (when its converted copy could not be cached)
    names the file's directory, which holds no ``config.json``: ``from_pretrained`` cannot
    load that directory, so such a base is saved with the adapter like the tiny model's.
    """
    base_path = policy.peft_config[policy.active_adapter].base_model_name_or_path
    return bool(base_path) and (Path(base_path) / "config.json").is_file()


def _save_adapter(policy: nn.Module, path: Path, state_dict: dict[str, Tensor] | None) -> None:
    """Save the peft adapter; save the base beside it if no directory holds it yet.

    A policy built on the tiny random Llama (or on weights changed in memory) has no
    base checkpoint to point at, so the export carries one in ``base_model/`` and the
    adapter config names it, which makes the export loadable on its own.
    """
    config = policy.peft_config[policy.active_adapter]
    if not _base_on_disk(policy):
        base_dir = path / BASE_MODEL_SUBDIR
        policy.get_base_model().save_pretrained(base_dir, state_dict=_base_weights(policy))
        config.base_model_name_or_path = str(base_dir.resolve())
    policy.save_pretrained(path, state_dict=state_dict)


def _base_weights(policy: nn.Module) -> dict[str, Tensor]:
    """The base model's weights as a plain model names them (adapters left out)."""
    weights = {}
    for name, tensor in policy.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        weights[name.replace(".base_layer.", ".")] = tensor
    return weights


def export_policy(
    policy: nn.Module,
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    merge_lora: bool = False,
    state_dict: dict[str, Tensor] | None = None,
) -> Path:
    """Save ``policy`` (and ``tokenizer``) with ``save_pretrained`` under ``path``.

    A plain ``transformers`` model is saved whole. A peft model is saved as its adapter
    (``adapter_config.json`` + weights; the base model goes to ``base_model/`` when it
    was not loaded from a local directory), or, with ``merge_lora``, as one full model
    with the adapters merged in. Merging works on a copy, so the live policy keeps its
    adapters; the copy costs one model's memory for the duration of the export.

    Args:
        policy: The trained policy, holding its training weights.
        path: Output directory (created).
        tokenizer: Saved beside the model when given.
        merge_lora: Merge peft adapters into the base and save a full model.
        state_dict: The policy's weights, if they must come from elsewhere (a
            strategy's gathered state dict); by default the module's own.

    Returns:
        The output directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_peft_model(policy) and merge_lora:
        if state_dict is not None:
            raise ValueError("merge_lora with an explicit state_dict is not supported")
        merged = copy.deepcopy(policy).merge_and_unload()
        merged.save_pretrained(path)
    elif is_peft_model(policy):
        _save_adapter(policy, path, state_dict)
    else:
        policy.save_pretrained(path, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


class HFExportCallback(Callback, Wired):
    """Save the policy in Hugging Face format when ``fit`` ends.

    The export holds the weights of the last training step (not the best checkpoint),
    taken from the strategy's state dict, so it is written by global rank zero only.
    Reload a full model with ``AutoModelForCausalLM.from_pretrained(dirpath)`` and an
    adapter with ``peft.AutoPeftModelForCausalLM.from_pretrained(dirpath)``.

    Args:
        dirpath: Output directory.
        merge_lora: For a peft policy, save one merged full model instead of the adapter.
        tokenizer: Saved beside the model (see :meth:`connect`); ``None`` saves none.
        reference: The reference callback: with it, an export while reference weights
            are swapped in is refused.
    """

    def __init__(
        self,
        dirpath: str | Path,
        merge_lora: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
        reference: HasWeights | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.merge_lora = merge_lora
        self.tokenizer = tokenizer
        self.reference = reference

    @override
    def connect(self, wiring: Wiring) -> None:
        """Wire the data's tokenizer and the reference callback (``train.py`` calls this)."""
        self.tokenizer = None if wiring.datamodule is None else wiring.datamodule.tokenizer
        self.reference = wiring.reference

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Export the training weights (refusing if reference weights are swapped in)."""
        self._require_training_weights()
        self._export(trainer, pl_module)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Ctrl-C or a crash after at least one step: export the last completed step.

        Only in a single process (gathering a sharded state dict while ranks are stopping
        could hang), and only once the training weights are back in the policy (the
        reference callback restores an in-flight swap in its own ``on_exception``).
        """
        if trainer.global_step == 0 or trainer.world_size > 1:
            return
        try:
            self._require_training_weights()
        except RuntimeError as error:
            rank_zero_info(f"No export after {type(exception).__name__}: {error}")
            return
        self._export(trainer, pl_module)
        rank_zero_info(
            f"{type(exception).__name__} at step {trainer.global_step}: the export holds "
            f"the policy of step {trainer.global_step}"
        )

    def _require_training_weights(self) -> None:
        """Raise if a reference swap is still in flight (the model would hold pi_ref)."""
        weights = None if self.reference is None else self.reference.weights
        if weights is not None and weights.in_flight:
            raise RuntimeError(
                "HFExportCallback: reference weights are swapped into the policy; refusing "
                "to export them as the trained model"
            )

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module_state = trainer.strategy.lightning_module_state_dict()
        if not trainer.is_global_zero:
            return
        state = None
        if not self.merge_lora:
            state = {
                name.removeprefix("policy."): tensor
                for name, tensor in module_state.items()
                if name.startswith("policy.")
            }
        export_policy(pl_module.policy, self.dirpath, self.tokenizer, self.merge_lora, state)
        rank_zero_info(f"Hugging Face export of the policy written to {self.dirpath}")
