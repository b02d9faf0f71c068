"""Batch layouts: how the pairs of a batch are laid out in rows for one forward.

- ``padded``: ``2B`` rows ``[prompt | response]``, right-padded to the longest row; rows
  ``0..B-1`` the chosen responses, ``B..2B-1`` the rejected ones. Any causal LM runs it
  with its own 2-D attention mask: the reference every other layout is tested against.
- ``prefix_shared``: one row per pair, ``[prompt | chosen | rejected]``: each prompt is
  computed once. Chosen tokens attend to the prompt and the chosen tokens before them;
  rejected tokens to the prompt and the rejected tokens before them, never to chosen ones;
  rejected position ids continue from the prompt's end, as in their own row.
- ``packed``: the pair-rows of ``prefix_shared``, packed first-fit decreasing into as few
  rows as hold the longest of them, each pair blind to the others, positions restarting
  at 0 for each pair. A row is never longer than the batch's longest pair-row, so dense
  attention costs no more per row than ``prefix_shared``'s, over fewer rows.

Every layout carries the scored tokens the same way (:mod:`lightning_dpo.batch`): for
each response token, the flat position (``row * width + column``) of the hidden state that
predicts it, its id, its sequence (``0..2B-1``, chosen first) and its index in its
response. ``prefix_shared`` and ``packed`` rows also carry the position ids and, per
token, its pair's slot and branch (prompt, chosen, rejected), from which
:mod:`lightning_dpo.layouts.masks` builds the attention mask the model needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_dpo.batch import (
    ATTENTION_MASK_KEY,
    BRANCHES_KEY,
    INPUT_IDS_KEY,
    LOSS_MASK_KEY,
    PAIR_SLOTS_KEY,
    POSITION_IDS_KEY,
    SCORE_LABELS_KEY,
    SCORE_LENGTHS_KEY,
    SCORE_OFFSETS_KEY,
    SCORE_POSITIONS_KEY,
    SCORE_SEQUENCES_KEY,
)
from lightning_dpo.pairs import TokenizedPair

LAYOUTS: tuple[str, ...] = ("auto", "padded", "prefix_shared", "packed")
"""The ``data.batches.layout`` choices; ``auto`` is the fastest exact one the model supports."""


def check_layout(name: str) -> str:
    """``name``, checked: one of :data:`LAYOUTS` (the one check of ``data.batches.layout``).

    Raises:
        ValueError: Naming ``data.batches.layout`` and the valid choices.
    """
    if name not in LAYOUTS:
        raise ValueError(f"data.batches.layout must be one of {list(LAYOUTS)}, got {name!r}")
    return name


PROMPT, CHOSEN, REJECTED = 0, 1, 2
"""Branch of a token in a shared row."""


@dataclass(frozen=True)
class Piece:
    """A run of tokens placed in a row, with the scored tokens it holds.

    Attributes:
        tokens: The token ids.
        positions: Their position ids (restarting at 0 at the piece's start).
        branches: Their branch (``PROMPT``, ``CHOSEN``, ``REJECTED``).
        scored: ``(sequence, predicting columns, labels)`` for each response in the piece;
            columns relative to the piece's start.
    """

    tokens: list[int]
    positions: list[int]
    branches: list[int]
    scored: list[tuple[int, range | list[int], Sequence[int]]]


def sequence_piece(prompt: Sequence[int], response: Sequence[int], sequence: int) -> Piece:
    """One row of the padded layout: ``[prompt | response]``."""
    start = len(prompt)
    length = start + len(response)
    return Piece(
        [*prompt, *response],
        list(range(length)),
        [PROMPT] * start + [CHOSEN] * len(response),
        [(sequence, range(start - 1, length - 1), response)],
    )


def pair_piece(pair: TokenizedPair, slot: int, pairs: int) -> Piece:
    """One pair-row: ``[prompt | chosen | rejected]``, its rejected positions after the prompt.

    The first token of each response is predicted by the prompt's last hidden state; each
    later rejected token by the rejected token before it.
    """
    prompt, chosen, rejected = pair.prompt_ids, pair.chosen_ids, pair.rejected_ids
    start, split = len(prompt), len(prompt) + len(chosen)
    rejected_columns = [start - 1, *range(split, split + len(rejected) - 1)]
    return Piece(
        [*prompt, *chosen, *rejected],
        [*range(split), *range(start, start + len(rejected))],
        [PROMPT] * start + [CHOSEN] * len(chosen) + [REJECTED] * len(rejected),
        [
            (slot, range(start - 1, split - 1), chosen),
            (pairs + slot, rejected_columns[: len(rejected)], rejected),
        ],
    )


def pack_rows(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of ``sizes`` in rows of at most ``capacity`` (ties stable)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        target = next((r for r, left in enumerate(room) if left >= sizes[index]), None)
        if target is None:
            rows.append([])
            room.append(capacity)
            target = len(rows) - 1
        rows[target].append(index)
        room[target] -= sizes[index]
    return rows


def place(
    rows: list[list[tuple[Piece, int]]], pad_token_id: int, shared: bool
) -> dict[str, Tensor]:
    """Lay pieces (with their pair slot) out in right-padded rows; the scored-token index.

    Args:
        rows: Per row, its pieces in order with each piece's pair slot.
        pad_token_id: Id of the padding.
        shared: Also emit position ids, pair slots and branches (the shared layouts).
    """
    width = max(sum(len(piece.tokens) for piece, _ in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    slots = torch.full(shape, -1, dtype=torch.long)
    branches = torch.zeros(shape, dtype=torch.int8)
    scored: list[tuple[int, Tensor, Sequence[int]]] = []
    for r, row in enumerate(rows):
        column = 0
        for piece, slot in row:
            end = column + len(piece.tokens)
            input_ids[r, column:end] = torch.tensor(piece.tokens)
            positions[r, column:end] = torch.tensor(piece.positions)
            slots[r, column:end] = slot
            branches[r, column:end] = torch.tensor(piece.branches, dtype=torch.int8)
            for sequence, columns, labels in piece.scored:
                flat = r * width + column + torch.as_tensor(list(columns), dtype=torch.long)
                scored.append((sequence, flat, labels))
            column = end
    batch = {INPUT_IDS_KEY: input_ids, **score_index(scored)}
    if shared:
        batch.update({POSITION_IDS_KEY: positions, PAIR_SLOTS_KEY: slots, BRANCHES_KEY: branches})
    else:
        batch[ATTENTION_MASK_KEY] = (slots >= 0).long()
        batch[LOSS_MASK_KEY] = (branches != PROMPT) & (slots >= 0)
    return batch


def score_index(scored: list[tuple[int, Tensor, Sequence[int]]]) -> dict[str, Tensor]:
    """The scored-token fields, ordered by sequence (chosen ``0..B-1``, then rejected)."""
    scored = sorted(scored, key=lambda item: item[0])
    lengths = [len(labels) for _, _, labels in scored]
    empty = torch.zeros(0, dtype=torch.long)
    return {
        SCORE_POSITIONS_KEY: torch.cat([flat for _, flat, _ in scored] or [empty]),
        SCORE_LABELS_KEY: torch.tensor([t for _, _, labels in scored for t in labels]),
        SCORE_SEQUENCES_KEY: torch.repeat_interleave(
            torch.tensor([s for s, _, _ in scored]), torch.tensor(lengths)
        ),
        SCORE_OFFSETS_KEY: torch.cat([torch.arange(n) for n in lengths] or [empty]),
        SCORE_LENGTHS_KEY: torch.tensor(lengths, dtype=torch.long),
    }


def padded_rows(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """The ``padded`` layout: ``2B`` rows, chosen rows first."""
    count = len(pairs)
    chosen = [[(sequence_piece(p.prompt_ids, p.chosen_ids, i), i)] for i, p in enumerate(pairs)]
    rejected = [
        [(sequence_piece(p.prompt_ids, p.rejected_ids, count + i), i)] for i, p in enumerate(pairs)
    ]
    return place(chosen + rejected, pad_token_id, shared=False)


def prefix_shared_rows(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """The ``prefix_shared`` layout: one row per pair."""
    count = len(pairs)
    rows = [[(pair_piece(p, i, count), i)] for i, p in enumerate(pairs)]
    return place(rows, pad_token_id, shared=True)


def packed_rows(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, Tensor]:
    """The ``packed`` layout: pair-rows packed into rows no longer than the longest one."""
    count = len(pairs)
    pieces = [pair_piece(p, i, count) for i, p in enumerate(pairs)]
    sizes = [len(piece.tokens) for piece in pieces]
    rows = pack_rows(sizes, max(sizes))
    return place([[(pieces[i], i) for i in row] for row in rows], pad_token_id, shared=True)


ROW_BUILDERS: dict[str, Callable[[Sequence[TokenizedPair], int], dict[str, Tensor]]] = {
    "padded": padded_rows,
    "prefix_shared": prefix_shared_rows,
    "packed": packed_rows,
}


def lay_out(pairs: Sequence[TokenizedPair], pad_token_id: int, layout: str) -> dict[str, Tensor]:
    """The token fields of ``pairs`` in ``layout`` (see the module docstring).

    Raises:
        ValueError: For an unknown layout (``auto`` must be resolved first).
    """
    if layout not in ROW_BUILDERS:
        raise ValueError(f"layout must be one of {sorted(ROW_BUILDERS)}, got {layout!r}")
    return ROW_BUILDERS[layout](pairs, pad_token_id)


def pair_tokens(pair: TokenizedPair) -> int:
    """Unique tokens of a pair: the prompt once, both responses."""
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)
