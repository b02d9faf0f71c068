"""The data loaders of :class:`~lightning_dpo.PreferenceDataModule`: planned, laid out, collated."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.batches.collate import collate_pairs
from lightning_dpo.data.batches.plan import BatchPlan
from lightning_dpo.data.batches.windows import PlannedDataLoader
from lightning_dpo.layouts.rows import pair_tokens
from lightning_dpo.pairs import TokenizedPair


def pair_loader(
    pairs: Sequence[TokenizedPair],
    tokenizer: PreTrainedTokenizerBase,
    layout: str,
    *,
    batch_size: int,
    max_tokens: int | None,
    seed: int,
    train: bool,
    window: int = 1,
    grouped: bool = True,
    num_workers: int = 0,
    **ranks: int,
) -> PlannedDataLoader:
    """Batches of ``pairs`` in ``layout``, planned by pair count or token budget.

    Args:
        pairs: The tokenised pairs of one split.
        tokenizer: Gives the padding id.
        layout: ``"padded"``, ``"prefix_shared"`` or ``"packed"``.
        batch_size: Pairs per batch when ``max_tokens`` is ``None``.
        max_tokens: Token budget of a batch (prompt once plus both responses per pair).
        seed: Seed of the training order.
        train: Shuffled by ``(seed, epoch)`` with ``step_pairs``; else in dataset order.
        window: Micro-batches per optimizer step (the trainer's ``accumulate_grad_batches``).
        grouped: Collate a window's micro-batches together (one reference swap per step).
        num_workers: ``DataLoader`` worker processes (persistent).
        **ranks: ``num_replicas`` and ``rank`` of :class:`BatchPlan` (default: the process
            group's).
    """
    plan = BatchPlan(
        [pair_tokens(pair) for pair in pairs],
        batch_size=batch_size,
        max_tokens=max_tokens,
        window=window,
        grouped=grouped,
        steps=train,
        shuffle=train,
        seed=seed,
        **ranks,  # type: ignore[arg-type]
    )
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id, layout=layout)
    return PlannedDataLoader(
        pairs, plan, collate, num_workers=num_workers, persistent_workers=num_workers > 0
    )
