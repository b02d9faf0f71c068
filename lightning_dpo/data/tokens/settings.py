"""The settings of the tokens stage: how records become token ids."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_dpo.data.tokens.tokenization import resolve_max_prompt_length


@dataclass
class TokenSettings:
    """How records become token ids (``data.tokens``).

    Attributes:
        max_length: Maximum tokens of prompt + response; longer responses are cut at
            their end.
        max_prompt_length: A fixed cap on the prompt tokens, below ``max_length`` (TRL's);
            ``None``: a prompt is cut only as far as the longer response needs, never below
            ``max_length // 2`` (:func:`~lightning_dpo.data.tokens.tokenization.prompt_budget`).
        cache_dir: Folder where token ids are cached across runs, or ``None``.
    """

    max_length: int = 64
    max_prompt_length: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        resolve_max_prompt_length(self.max_length, self.max_prompt_length)
