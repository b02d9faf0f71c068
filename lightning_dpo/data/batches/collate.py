"""Collation of tokenised preference pairs into the batch contract used by the losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dpo.layouts.rows import lay_out
from lightning_dpo.pairs import TokenizedPair


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


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, layout: str = "padded"
) -> dict[str, Tensor]:
    """Collates ``B`` pairs into a batch in ``layout`` (see :mod:`lightning_dpo.batch`).

    Batch contract (the ``padded`` layout, the default):

    * ``input_ids`` (long ``[2B, T]``): rows ``0..B-1`` are prompt + chosen (+ EOS) of the
      pairs, rows ``B..2B-1`` prompt + rejected (+ EOS), in the same pair order; right-padded
      with ``pad_token_id`` to the longest row (``T``).
    * ``attention_mask`` (long ``[2B, T]``): 1 on real tokens, 0 on padding.
    * ``loss_mask`` (bool ``[2B, T]``): True exactly on response tokens (EOS included),
      False on prompt and padding. Position 0 is always a prompt token.
    * the scored-token index (``score_positions``, ``score_labels``, ``score_sequences``,
      ``score_offsets``), the same in every layout, and ``layout``.
    * ``chosen_reward``, ``rejected_reward`` (float ``[B]``): only when the pairs have rewards.
    * ``pair_index`` (long ``[B]``): each pair's position in its split's tokenised dataset
      (``TokenizedPair.index``); always present in batches of :class:`PreferenceDataModule`,
      whose :meth:`~PreferenceDataModule.fingerprint` identifies that dataset, so that
      ``(fingerprint, pair_index)`` keys a pair across runs (e.g. cached reference log-probs).

    ``prefix_shared`` and ``packed`` batches carry ``position_ids``, ``pair_slots`` and
    ``branches`` instead of the two masks (:mod:`lightning_dpo.layouts.rows`).

    Args:
        pairs: Tokenised pairs (at least one).
        pad_token_id: Id used for padding.
        layout: ``"padded"``, ``"prefix_shared"`` or ``"packed"``.

    Returns:
        The batch dictionary.

    Raises:
        ValueError: If ``pairs`` is empty or mixes pairs with and without rewards (or
            with and without an index), or for an unknown layout.
    """
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    return {**lay_out(pairs, pad_token_id, layout), **_rewards(pairs), **_pair_index(pairs)}
