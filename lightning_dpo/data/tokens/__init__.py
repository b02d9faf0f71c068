"""Stage 2, tokens: records encoded once into prompt and response token ids, cut to fit.

- :mod:`~lightning_dpo.data.tokens.tokenizer_loading` (which tokenizer),
  :mod:`~lightning_dpo.data.tokens.byte_tokenizer`,
  :mod:`~lightning_dpo.data.tokens.char_tokenizer` (the built-in ones).
- :mod:`~lightning_dpo.data.tokens.tokenization`: records to ``TokenizedPair``s (chat
  templates, prompt budget, cuts).
- :mod:`~lightning_dpo.data.tokens.cache`: token ids kept across runs, keyed by
  :mod:`~lightning_dpo.data.tokens.fingerprints`.
"""
