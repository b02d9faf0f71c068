"""Scoring a laid-out batch: per-sequence log-probs from one forward of a causal LM.

- :mod:`~lightning_dpo.scoring.sequences`: the forward, the scored tokens, the sums per
  sequence (LD-DPO and WPO weights on the way), split into pairs.
- :mod:`~lightning_dpo.scoring.head`: the response-only LM head (label log-probs at the
  scored positions, in chunks, logits recomputed in backward).
- :mod:`~lightning_dpo.scoring.label_logps`: the plain path from materialised logits.
- :mod:`~lightning_dpo.scoring.plan`: the :class:`ScoringPlan` (layout, head, chunk size,
  attention) every consumer receives.
- :mod:`~lightning_dpo.scoring.probes`: which layout and head are exact on a model, and
  :func:`resolve_plan`, which decides the plan once.
"""

from lightning_dpo.scoring.head import head_label_logps, head_unsupported, response_head
from lightning_dpo.scoring.label_logps import token_logps
from lightning_dpo.scoring.plan import DEFAULT_LOGPS_CHUNK_SIZE, ScoringPlan, check_chunk_size
from lightning_dpo.scoring.probes import resolve_layout, resolve_plan, response_head_unsupported
from lightning_dpo.scoring.sequences import (
    ScoredTokens,
    SequenceLogps,
    ld_token_weights,
    pair_logps,
    scored_tokens,
    sequence_logps,
)

__all__ = [
    "DEFAULT_LOGPS_CHUNK_SIZE",
    "ScoredTokens",
    "ScoringPlan",
    "SequenceLogps",
    "check_chunk_size",
    "head_label_logps",
    "head_unsupported",
    "ld_token_weights",
    "pair_logps",
    "resolve_layout",
    "resolve_plan",
    "response_head",
    "response_head_unsupported",
    "scored_tokens",
    "sequence_logps",
    "token_logps",
]
