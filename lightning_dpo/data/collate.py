"""Collation of tokenised preference pairs into the batch contract used by the losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dpo.data.tokenization import TokenizedPair


def _rows(pairs: Sequence[TokenizedPair]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(prompt, response) per row: all chosen rows first, then all rejected rows."""
    chosen = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    rejected = [(p.prompt_ids, p.rejected_ids) for p in pairs]
    return chosen + rejected


def _rewards(pairs: Sequence[TokenizedPair]) -> dict[str, Tensor]:
    """Reward tensors when every pair has rewards, nothing when none has."""
    with_rewards = [p.has_rewards for p in pairs]
    if not any(with_rewards):
        return {}
    if not all(with_rewards):
        raise ValueError("cannot collate pairs with rewards together with pairs without rewards")
    return {
        "chosen_reward": torch.tensor([p.chosen_reward for p in pairs], dtype=torch.float32),
        "rejected_reward": torch.tensor([p.rejected_reward for p in pairs], dtype=torch.float32),
    }


def _pair_index(pairs: Sequence[TokenizedPair]) -> dict[str, Tensor]:
    """``pair_index`` when every pair has its dataset index, nothing when none has."""
    indices = [p.index for p in pairs]
    if all(i is None for i in indices):
        return {}
    if any(i is None for i in indices):
        raise ValueError("cannot collate pairs with a dataset index together with pairs without")
    return {"pair_index": torch.tensor(indices, dtype=torch.long)}


def collate_pairs(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """Collates B pairs into a right-padded batch of 2B sequences.

    Batch contract:

    * ``input_ids`` (long ``[2B, T]``): rows ``0..B-1`` are prompt + chosen (+ EOS) of the
      pairs, rows ``B..2B-1`` prompt + rejected (+ EOS), in the same pair order; right-padded
      with ``pad_token_id`` to the longest row (``T``).
    * ``attention_mask`` (long ``[2B, T]``): 1 on real tokens, 0 on padding.
    * ``loss_mask`` (bool ``[2B, T]``): True exactly on response tokens (EOS included),
      False on prompt and padding. Position 0 is always a prompt token.
    * ``chosen_reward``, ``rejected_reward`` (float ``[B]``): only when the pairs have rewards.
    * ``pair_index`` (long ``[B]``): each pair's position in its split's tokenised dataset
      (``TokenizedPair.index``); always present in batches of :class:`PreferenceDataModule`,
      whose :meth:`~PreferenceDataModule.fingerprint` identifies that dataset, so that
      ``(fingerprint, pair_index)`` keys a pair across runs (e.g. cached reference log-probs).

    Args:
        pairs: Tokenised pairs (at least one).
        pad_token_id: Id used for padding.

    Returns:
        The batch dictionary.

    Raises:
        ValueError: If ``pairs`` is empty or mixes pairs with and without rewards (or
            with and without an index).
    """
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    rows = _rows(pairs)
    width = max(len(prompt) + len(response) for prompt, response in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (prompt, response) in enumerate(rows):
        start, end = len(prompt), len(prompt) + len(response)
        input_ids[row, :end] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[row, :end] = 1
        loss_mask[row, start:end] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        **_rewards(pairs),
        **_pair_index(pairs),
    }
