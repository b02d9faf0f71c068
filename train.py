"""Train a policy with a preference loss: ``python train.py model=lora loss=ipo``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lightning_dpo.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Fit the configured run; return the optimised metric for Hydra sweepers."""
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
