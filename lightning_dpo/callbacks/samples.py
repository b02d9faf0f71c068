"""Greedy completions of fixed validation prompts, logged as text at each validation."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from transformers import PreTrainedTokenizerBase
from typing_extensions import override

from lightning_dpo.reference.weights.base import HasWeights, eval_mode, reference_context
from lightning_dpo.wiring import Wired, Wiring

COLUMNS = ("prompt", "chosen (data)", "completion")


@runtime_checkable
class ValidationPrompts(Protocol):
    """Where the samples' prompts come from (``PreferenceDataModule`` after setup).

    Attributes:
        tokenizer: Decodes the token ids.
        val_pairs: Tokenised validation pairs (``prompt_ids``, ``chosen_ids``).
    """

    tokenizer: PreTrainedTokenizerBase
    val_pairs: Sequence[Any] | None


def greedy_completions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
) -> list[str]:
    """Decode ``model``'s greedy continuation of each prompt (token ids), in one batch.

    The prompts are left-padded with the tokenizer's pad id (masked out), so every row
    continues from its last prompt token. Special tokens are stripped from the text.
    """
    device = next(model.parameters()).device
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    with torch.no_grad(), eval_mode(model):
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def markdown_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(text: str) -> str:
        return f"`{text}`".replace("|", "\\|").replace("\n", "\\n") if text else "(empty)"

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


class GreedySamplesCallback(Callback, Wired):
    """Log greedy completions of a few fixed validation prompts after each validation.

    The prompts are the first ``num_prompts`` validation pairs of the data's
    ``val_pairs`` (so they stay fixed across validations); each row shows the prompt,
    the data's chosen response and the policy's greedy completion. Once, at the first
    validation, the same prompts are also completed by the reference policy, through
    the reference callback's weight reference (weights swapped in or adapters disabled,
    restored afterwards). The policy's own samples use its training weights.

    Samples go to ``<dirpath>/samples.md`` (appended), to the console, and as text to a
    TensorBoard (``add_text``) or Weights & Biases (``log_text``) logger when present.
    The sanity check is skipped. Only global rank zero generates.

    Args:
        dirpath: Directory of ``samples.md``.
        num_prompts: How many validation prompts to complete.
        max_new_tokens: Greedy decoding length limit.
        datamodule: The prompts' source (see :meth:`connect`); by default the datamodule
            given to ``fit``.
        reference: The reference callback whose weights complete the reference samples;
            without it there are none.
    """

    def __init__(
        self,
        dirpath: str | Path,
        num_prompts: int = 4,
        max_new_tokens: int = 16,
        datamodule: ValidationPrompts | None = None,
        reference: HasWeights | None = None,
    ):
        if num_prompts < 1 or max_new_tokens < 1:
            raise ValueError(
                f"num_prompts and max_new_tokens must be >= 1, got {num_prompts}, {max_new_tokens}"
            )
        self.path = Path(dirpath) / "samples.md"
        self.num_prompts = num_prompts
        self.max_new_tokens = max_new_tokens
        self.datamodule = datamodule
        self.reference = reference
        self._reference_done = False

    @override
    def connect(self, wiring: Wiring) -> None:
        """Wire the prompts' source and the reference callback (``train.py`` calls this)."""
        self.datamodule, self.reference = wiring.datamodule, wiring.reference

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Complete the fixed prompts with the policy (and, the first time, the reference)."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        data = self.datamodule if self.datamodule is not None else trainer.datamodule
        tokenizer, pairs = _prompts_source(data, self.num_prompts)
        prompts = [pair.prompt_ids for pair in pairs]
        if not self._reference_done:
            self._reference_done = True
            weights = None if self.reference is None else self.reference.weights
            if weights is None:
                rank_zero_warn(
                    "GreedySamplesCallback: no reference samples (no reference callback "
                    "connected, or a reference cache, which holds log-probs, not weights)"
                )
            else:
                with reference_context(weights, pl_module.policy):
                    texts = self._generate(trainer, pl_module, tokenizer, prompts)
                self._emit(trainer, "reference", _rows(tokenizer, pairs, texts))
        texts = self._generate(trainer, pl_module, tokenizer, prompts)
        self._emit(trainer, "policy", _rows(tokenizer, pairs, texts))

    def _generate(self, trainer, pl_module, tokenizer, prompts) -> list[str]:
        plugin = getattr(trainer, "precision_plugin", None)
        context = plugin.forward_context() if plugin is not None else nullcontext()
        with context:
            return greedy_completions(pl_module.policy, tokenizer, prompts, self.max_new_tokens)

    def _emit(self, trainer: pl.Trainer, source: str, rows: list[tuple[str, str, str]]) -> None:
        step = trainer.global_step
        table = markdown_table(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(f"## step {step}: {source}\n\n{table}\n\n")
        rank_zero_info(f"Greedy samples at step {step} ({source}):\n{table}")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(f"samples/{source}", table, global_step=step)
            elif isinstance(logger, WandbLogger):
                data = [[step, *row] for row in rows]
                logger.log_text(key=f"samples/{source}", columns=["step", *COLUMNS], data=data)


def _prompts_source(data: Any, count: int):
    """The data's tokenizer and its first ``count`` validation pairs."""
    if not isinstance(data, ValidationPrompts) or not data.val_pairs:
        raise RuntimeError(
            "GreedySamplesCallback needs data with `tokenizer` and non-empty `val_pairs` (as "
            "lightning_dpo.PreferenceDataModule has after setup): pass it to fit, or as "
            "GreedySamplesCallback(datamodule=...)"
        )
    return data.tokenizer, list(data.val_pairs[:count])


def _rows(tokenizer, pairs, texts: list[str]) -> list[tuple[str, str, str]]:
    decode = tokenizer.decode
    return [
        (
            decode(p.prompt_ids, skip_special_tokens=True),
            decode(p.chosen_ids, skip_special_tokens=True),
            text,
        )
        for p, text in zip(pairs, texts, strict=True)
    ]
