"""The data loaders of :class:`~lightning_dpo.PreferenceDataModule`: planned, laid out, collated."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.data.batches.plan import BatchPlan
from lightning_dpo.data.batches.settings import BatchSettings
from lightning_dpo.data.batches.windows import PlannedDataLoader
from lightning_dpo.layouts.rows import pair_tokens
from lightning_dpo.pairs import TokenizedPair


def pair_loader(
    pairs: Sequence[TokenizedPair],
    tokenizer: PreTrainedTokenizerBase,
    layout: str,
    settings: BatchSettings,
    *,
    seed: int,
    train: bool,
    window: int = 1,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> PlannedDataLoader:
    """Batches of ``pairs`` in ``layout``, planned by pair count or token budget.

    Args:
        pairs: The tokenised pairs of one split.
        tokenizer: Gives the padding id.
        layout: ``"padded"``, ``"prefix_shared"`` or ``"packed"``.
        settings: Pairs or tokens per batch, windows, workers (``layout`` is decided).
        seed: Seed of the training order.
        train: Shuffled by ``(seed, epoch)`` with ``step_pairs``; else in dataset order.
        window: Micro-batches per optimizer step (the trainer's ``accumulate_grad_batches``).
        num_replicas: Ranks sharing the data (default: the process group's).
        rank: This rank (default: the process group's).
    """
    plan = BatchPlan(
        [pair_tokens(pair) for pair in pairs],
        batch_size=settings.batch_size,
        max_tokens=settings.max_tokens,
        window=window,
        grouped=settings.step_windows,
        steps=train,
        shuffle=train,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
    )
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id, layout=layout)
    workers = settings.num_workers
    return PlannedDataLoader(
        pairs, plan, collate, num_workers=workers, persistent_workers=workers > 0
    )
