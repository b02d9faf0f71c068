"""Weight references: ways to make the live policy *be* pi_ref for one forward.

- :mod:`~lightning_dpo.reference.weights.base`: the role (:class:`WeightReference`) and
  what every reference forward needs around it (no grad, dropout off).
- :mod:`~lightning_dpo.reference.weights.snapshot`: a host snapshot swapped in
  (full-parameter training), kept as :mod:`~lightning_dpo.reference.weights.placement`
  decides once per run, or named by its pretrained source in checkpoints
  (:mod:`~lightning_dpo.reference.weights.by_address`).
- :mod:`~lightning_dpo.reference.weights.adapters`: peft adapters disabled.
- :mod:`~lightning_dpo.reference.weights.selection`: which one a run gets, or a
  checkpoint holds.
"""
