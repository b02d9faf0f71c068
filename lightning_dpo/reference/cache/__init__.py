"""The reference log-prob cache: precomputed once, reused by every run with the same key.

- :mod:`~lightning_dpo.reference.cache.store`: the key (reference weights, data, log-prob
  settings) and the verified tables on disk.
- :mod:`~lightning_dpo.reference.cache.build`: filling it at fit start (every rank its
  share) and loading it.
- :mod:`~lightning_dpo.reference.cache.source`: the log-prob source that reads it.
"""
