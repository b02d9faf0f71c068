"""How the pairs of a batch become rows for one forward, and the attention mask those rows need.

- :mod:`~lightning_dpo.layouts.rows`: the layouts (``padded``, ``prefix_shared``,
  ``packed``): rows, position ids, and where each scored token sits.
- :mod:`~lightning_dpo.layouts.masks`: the attention mask a shared row needs, in the form
  the model's attention implementation reads.

Below both the data (which lays batches out) and the scoring (which reads them); which
layout is exact on a model is probed by :mod:`lightning_dpo.scoring.probes`, which scores.
"""

from lightning_dpo.layouts.masks import forward_inputs, mask_unsupported
from lightning_dpo.layouts.rows import LAYOUTS, lay_out, pack_rows, pair_tokens

__all__ = ["LAYOUTS", "forward_inputs", "lay_out", "mask_unsupported", "pack_rows", "pair_tokens"]
