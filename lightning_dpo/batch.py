"""The batch contract between the data, the reference callback and the module.

One batch holds ``B`` preference pairs as ``2B`` rows: rows ``0..B-1`` prompt + chosen,
rows ``B..2B-1`` prompt + rejected, in the same pair order (see
:func:`lightning_dpo.data.collate_pairs`). The data writes the token fields, the
reference callback adds :data:`REFERENCE_LOGPS_KEY` before the step, and the module
reads both; this module is the one place that names the keys.
"""

from __future__ import annotations

from typing import Any, TypedDict

from torch import Tensor

INPUT_IDS_KEY = "input_ids"
ATTENTION_MASK_KEY = "attention_mask"
LOSS_MASK_KEY = "loss_mask"
CHOSEN_REWARD_KEY = "chosen_reward"
REJECTED_REWARD_KEY = "rejected_reward"
PAIR_INDEX_KEY = "pair_index"
REFERENCE_LOGPS_KEY = "reference_logps"
"""The ``[2B]`` reference log-probs, added by the reference callback before each step."""
WINDOW_KEY = "reference_window"
"""The micro-batch's place in its optimizer step's window (``WindowedDataLoader`` only)."""


class PreferenceBatch(TypedDict, total=False):
    """A collated batch of ``B`` pairs (``2B`` rows, right-padded to ``T`` tokens).

    Attributes:
        input_ids: ``[2B, T]`` long: prompt + response (+ EOS), padded with the pad id.
        attention_mask: ``[2B, T]`` long: 1 on real tokens, 0 on padding.
        loss_mask: ``[2B, T]`` bool: True exactly on the response tokens (EOS included).
        chosen_reward: ``[B]`` float, when the pairs have rewards.
        rejected_reward: ``[B]`` float, when the pairs have rewards.
        pair_index: ``[B]`` long: each pair's position in its split (the cache's key).
        reference_logps: ``[2B]`` summed reference log-probs of the response tokens.
        reference_window: A ``WindowSlot`` (windowed training batches only), removed by
            the reference callback before the step.
    """

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor
    pair_index: Tensor
    reference_logps: Tensor
    reference_window: Any
