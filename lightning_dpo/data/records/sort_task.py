"""Embedded default task: sort a string of digits (no download, verifiable answer).

A prompt is a random string of digits followed by ``">"`` (e.g. ``"31415>"``), the chosen
response is the digits sorted ascending (``"11345"``) and the rejected response is that
sorted answer with two positions holding different digits swapped (a wrong permutation).
"""

from __future__ import annotations

import random
from dataclasses import replace

from lightning_dpo.data.records.record import PreferenceRecord

SEPARATOR = ">"
DIGITS = "0123456789"
SORT_TASK_SOURCE = "<sort_task>"


def _random_digits(rng: random.Random, min_digits: int, max_digits: int) -> str:
    """Draws a digit string with at least two distinct digits (so a wrong answer exists)."""
    while True:
        length = rng.randint(min_digits, max_digits)
        digits = "".join(rng.choice(DIGITS) for _ in range(length))
        if len(set(digits)) > 1:
            return digits


def _wrong_answer(rng: random.Random, answer: str) -> str:
    """Swaps two positions of the sorted ``answer`` that hold different digits."""
    pairs = [
        (i, j)
        for i in range(len(answer))
        for j in range(i + 1, len(answer))
        if answer[i] != answer[j]
    ]
    i, j = rng.choice(pairs)
    chars = list(answer)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _positional_accuracy(answer: str, guess: str) -> float:
    """Fraction of positions where ``guess`` matches ``answer``."""
    return sum(a == b for a, b in zip(answer, guess, strict=True)) / len(answer)


def _check_args(num_pairs: int, min_digits: int, max_digits: int) -> None:
    """Validates the generator arguments."""
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    if not 2 <= min_digits <= max_digits:
        raise ValueError(
            f"expected 2 <= min_digits <= max_digits, got min_digits={min_digits}, "
            f"max_digits={max_digits}"
        )
    capacity = sum(10**n - 10 for n in range(min_digits, max_digits + 1))
    if num_pairs > capacity:
        raise ValueError(f"only {capacity} distinct prompts exist, {num_pairs} requested")


def generate_sort_task(
    num_pairs: int,
    seed: int,
    min_digits: int = 3,
    max_digits: int = 8,
    with_rewards: bool = False,
    source: str = SORT_TASK_SOURCE,
) -> list[PreferenceRecord]:
    """Generates digit-sorting preference pairs with distinct prompts.

    Deterministic for a given ``seed`` (uses ``random.Random(seed)``), and the first ``k``
    records of a call are the same for any ``num_pairs >= k``.

    Args:
        num_pairs: Number of pairs; every pair has a different prompt.
        seed: Seed of the random generator.
        min_digits: Minimum number of digits in a prompt (at least 2).
        max_digits: Maximum number of digits in a prompt.
        with_rewards: If True, ``chosen_reward`` is 1.0 and ``rejected_reward`` is the
            fraction of positions the rejected answer gets right.
        source: Value of ``PreferenceRecord.source`` for the generated records.

    Returns:
        The records; ``chosen`` is sorted, ``rejected`` is an unsorted permutation of it.

    Raises:
        ValueError: If the arguments are out of range.
    """
    _check_args(num_pairs, min_digits, max_digits)
    rng = random.Random(seed)
    seen: set[str] = set()
    records: list[PreferenceRecord] = []
    while len(records) < num_pairs:
        digits = _random_digits(rng, min_digits, max_digits)
        if digits in seen:
            continue
        seen.add(digits)
        chosen = "".join(sorted(digits))
        rejected = _wrong_answer(rng, chosen)
        rewards = (1.0, _positional_accuracy(chosen, rejected)) if with_rewards else (None, None)
        records.append(
            PreferenceRecord(digits + SEPARATOR, chosen, rejected, *rewards, source=source)
        )
    return records


def generate_sort_splits(
    num_train: int,
    num_val: int,
    seed: int,
    min_digits: int = 3,
    max_digits: int = 8,
    with_rewards: bool = False,
) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """Generates train and validation sort-task pairs with held-out prompts.

    ``num_train + num_val`` pairs with pairwise distinct prompts are generated in one stream
    by :func:`generate_sort_task`; the first ``num_train`` go to train and the rest to
    validation, so no validation prompt appears in train.

    Args:
        num_train: Number of training pairs.
        num_val: Number of validation pairs.
        seed: Seed of the random generator.
        min_digits: Minimum number of digits in a prompt.
        max_digits: Maximum number of digits in a prompt.
        with_rewards: Whether to attach rewards (see :func:`generate_sort_task`).

    Returns:
        ``(train, val)`` record lists, sourced ``"<sort_task:train>"`` / ``"<sort_task:val>"``.
    """
    records = generate_sort_task(
        num_train + num_val, seed, min_digits, max_digits, with_rewards=with_rewards
    )
    train = [replace(r, source="<sort_task:train>") for r in records[:num_train]]
    val = [replace(r, source="<sort_task:val>") for r in records[num_train:]]
    return train, val
