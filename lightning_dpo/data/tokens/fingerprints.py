"""Stable digests of tokenizers, record texts and tokenised splits (sha256, hex)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.records.record import PreferenceRecord
from lightning_dpo.pairs import TokenizedPair

#: Bumped whenever the tokenised layout (BOS, EOS, truncation) changes meaning.
#: 2: over-long prompts are cut (not refused); empty responses are kept as EOS alone.
#: 3: ids as the tokenizer makes them (its own BOS or none, BOS/EOS never twice); chat
#: template renderings tokenised as rendered, end-of-turn included.
TOKENIZATION_VERSION = 3


def _update(digest: Any, value: Any) -> None:
    """Feeds one JSON value to ``digest``, length-prefixed so that values cannot run together."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Digest of what decides a tokenizer's ids: its full serialisation and special tokens.

    Fast tokenizers are hashed through ``backend_tokenizer.to_str()`` (vocabulary, merges,
    normalisers, pre-tokenisers); slow ones through their sorted vocabulary. The class name,
    the special tokens and ``split_special_tokens`` (whether a special token's text inside
    the data is encoded as text) are included in both cases.

    Args:
        tokenizer: The tokenizer.

    Returns:
        A 64-character hex digest, equal across processes for an identical tokenizer.
    """
    digest = hashlib.sha256()
    _update(digest, type(tokenizer).__name__)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        _update(digest, backend.to_str())
    else:
        _update(digest, sorted(tokenizer.get_vocab().items()))
    _update(digest, {k: str(v) for k, v in tokenizer.special_tokens_map.items()})
    _update(digest, bool(getattr(tokenizer, "split_special_tokens", False)))
    return digest.hexdigest()


def texts_fingerprint(records: Iterable[PreferenceRecord], tokenizer_digest: str) -> str:
    """Digest of the texts to encode and the tokenizer that encodes them (the cache key).

    Args:
        records: The records, in order.
        tokenizer_digest: :func:`tokenizer_fingerprint` of the tokenizer.

    Returns:
        A 64-character hex digest.
    """
    digest = hashlib.sha256()
    _update(digest, ["encodings", TOKENIZATION_VERSION, tokenizer_digest])
    for r in records:
        _update(digest, [r.prompt, r.chosen, r.rejected, r.templated])
    return digest.hexdigest()


def pairs_fingerprint(pairs: Sequence[TokenizedPair], settings: Mapping[str, Any]) -> str:
    """Digest of a tokenised split: every pair's ids, mask boundary and rewards, and settings.

    Sources and line numbers are left out, so the same data read from another path (or
    machine) has the same fingerprint.

    Args:
        pairs: The split's pairs, in dataset order (``pair_index`` order).
        settings: Tokenisation settings (lengths, tokenizer digest ...), JSON-serialisable.

    Returns:
        A 64-character hex digest.
    """
    digest = hashlib.sha256()
    _update(digest, ["pairs", TOKENIZATION_VERSION, dict(settings), len(pairs)])
    for p in pairs:
        _update(
            digest,
            [p.prompt_ids, p.chosen_ids, p.rejected_ids, p.chosen_reward, p.rejected_reward],
        )
    return digest.hexdigest()
