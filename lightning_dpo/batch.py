"""The batch contract between the data, the reference callback and the module.

One batch holds ``B`` preference pairs laid out in rows by one of the layouts of
:mod:`lightning_dpo.layouts.rows` (``padded``: ``2B`` rows, chosen rows first;
``prefix_shared``: a row per pair; ``packed``: several pairs per row). Whatever the
layout, the scored tokens are listed the same way, sequence by sequence: sequences
``0..B-1`` are the chosen responses of the pairs, ``B..2B-1`` the rejected ones, in the same
pair order. The data writes the token fields, the reference callback adds
:data:`REFERENCE_LOGPS_KEY` before the step, and the module reads both; this module is the
one place that names the keys.
"""

from __future__ import annotations

from typing import Any, TypedDict

from torch import Tensor

INPUT_IDS_KEY = "input_ids"
ATTENTION_MASK_KEY = "attention_mask"
LOSS_MASK_KEY = "loss_mask"
POSITION_IDS_KEY = "position_ids"
PAIR_SLOTS_KEY = "pair_slots"
BRANCHES_KEY = "branches"
SCORE_POSITIONS_KEY = "score_positions"
SCORE_LABELS_KEY = "score_labels"
SCORE_SEQUENCES_KEY = "score_sequences"
SCORE_OFFSETS_KEY = "score_offsets"
SCORE_LENGTHS_KEY = "score_lengths"
CHOSEN_REWARD_KEY = "chosen_reward"
REJECTED_REWARD_KEY = "rejected_reward"
PAIR_INDEX_KEY = "pair_index"
STEP_PAIRS_KEY = "step_pairs"
"""Pairs in the optimizer step the batch belongs to, over all micro-batches and ranks."""
REFERENCE_LOGPS_KEY = "reference_logps"
"""The ``[2B]`` reference log-probs, added by the reference callback before each step."""
WINDOW_KEY = "step_window"
"""The micro-batch's place in its optimizer step's window (windowed loaders only)."""


class PreferenceBatch(TypedDict, total=False):
    """A collated batch of ``B`` pairs in ``R`` rows of ``T`` tokens.

    Attributes:
        input_ids: ``[R, T]`` long: the rows' tokens, right-padded with the pad id.
        attention_mask: ``[R, T]`` long, ``padded`` layout: 1 on real tokens, 0 on padding.
        loss_mask: ``[R, T]`` bool, ``padded`` layout: True exactly on the response tokens
            (EOS included).
        position_ids: ``[R, T]`` long, shared layouts: each token's position in its own
            sequence (rejected tokens continue from the prompt's end).
        pair_slots: ``[R, T]`` long, shared layouts: the pair (``0..B-1``) of each token,
            -1 on padding.
        branches: ``[R, T]`` int8, shared layouts: 0 prompt, 1 chosen, 2 rejected.
        score_positions: ``[N]`` long: for each scored token, the flat index
            (``row * T + column``) of the hidden state that predicts it.
        score_labels: ``[N]`` long: the scored token ids.
        score_sequences: ``[N]`` long: each scored token's sequence, ``0..2B-1``
            (non-decreasing).
        score_offsets: ``[N]`` long: each scored token's index in its response.
        score_lengths: ``[2B]`` long: tokens scored per sequence.
        chosen_reward: ``[B]`` float, when the pairs have rewards.
        rejected_reward: ``[B]`` float, when the pairs have rewards.
        pair_index: ``[B]`` long: each pair's position in its split (the cache's key).
        step_pairs: ``[]`` long: pairs in this batch's optimizer step over all its
            micro-batches and ranks (training batches of ``PreferenceDataModule``); the
            module then weighs every pair of the step alike.
        reference_logps: ``[2B]`` summed reference log-probs of the response tokens.
        step_window: A ``WindowSlot`` (windowed training batches only), removed by
            the reference callback before the step.
    """

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor
    position_ids: Tensor
    pair_slots: Tensor
    branches: Tensor
    score_positions: Tensor
    score_labels: Tensor
    score_sequences: Tensor
    score_offsets: Tensor
    score_lengths: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor
    pair_index: Tensor
    step_pairs: Tensor
    reference_logps: Tensor
    step_window: Any
