"""Stage 3, batches: which pairs form each micro-batch and optimizer step, collated.

- :mod:`~lightning_dpo.data.batches.plan`: ``BatchPlan``, an epoch's micro-batches by
  pair count or token budget, dealt between the ranks.
- :mod:`~lightning_dpo.data.batches.collate`: pairs to the batch contract, in a layout.
- :mod:`~lightning_dpo.data.batches.windows`: a step's micro-batches carried together.
- :mod:`~lightning_dpo.data.batches.loaders`: the data module's loaders, all three joined.
"""
