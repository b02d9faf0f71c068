"""Held-out validation split of file-backed records, by prompt."""

from __future__ import annotations

import random
from collections.abc import Sequence

from lightning_dpo.data.records.record import DataValidationError, PreferenceRecord


def split_by_prompt(
    records: Sequence[PreferenceRecord], val_fraction: float, seed: int
) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """Splits records into train and validation so that no prompt is in both.

    The distinct prompts (in first-seen order) are shuffled with ``random.Random(seed)`` and
    the first ``round(val_fraction * num_prompts)`` of them (at least one, and leaving at
    least one for train) go to validation with all their records. Record order is kept.

    Args:
        records: Records to split.
        val_fraction: Fraction of distinct prompts to hold out, in ``(0, 1)``.
        seed: Seed of the shuffle.

    Returns:
        ``(train, val)``.

    Raises:
        ValueError: If ``val_fraction`` is not in ``(0, 1)``.
        DataValidationError: If there are fewer than two distinct prompts.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    prompts = list(dict.fromkeys(r.prompt for r in records))
    if len(prompts) < 2:
        source = records[0].source if records else "<no records>"
        raise DataValidationError(
            f"{source}: expected at least 2 distinct prompts to hold out a validation split, "
            f"got {len(prompts)}"
        )
    random.Random(seed).shuffle(prompts)
    num_val = min(max(round(val_fraction * len(prompts)), 1), len(prompts) - 1)
    held_out = set(prompts[:num_val])
    train = [r for r in records if r.prompt not in held_out]
    val = [r for r in records if r.prompt in held_out]
    return train, val
