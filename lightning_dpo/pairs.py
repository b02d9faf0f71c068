"""The record every stage shares: one preference pair as token ids (the ground floor).

Made by the data's tokenisation (:mod:`lightning_dpo.data.tokens.tokenization`), laid out in rows
by :mod:`lightning_dpo.layouts`, probed by :mod:`lightning_dpo.scoring.probes`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one preference pair; the prompt/response boundary is exact.

    Attributes:
        prompt_ids: Prompt tokens, as the tokenizer (or chat template) makes them: BOS
            first where the tokenizer adds one.
        chosen_ids: Chosen response tokens, ending with EOS (or the chat template's
            end-of-turn) unless truncated away.
        rejected_ids: Rejected response tokens, likewise.
        chosen_reward: Reward of the chosen response, if any.
        rejected_reward: Reward of the rejected response, if any.
        source: Where the record came from.
        line: 1-based line in ``source`` (``None`` for generated records).
        index: Position of the pair in its split's tokenised dataset (set by the data
            module; collated into ``pair_index``), or ``None``.
    """

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    source: str = "<generated>"
    line: int | None = None
    index: int | None = None

    @property
    def has_rewards(self) -> bool:
        """Whether both rewards are set."""
        return self.chosen_reward is not None and self.rejected_reward is not None
