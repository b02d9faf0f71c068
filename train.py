"""Train a policy with a preference loss: ``python train.py model=lora loss=ipo``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lightning_dpo.errors import report_user_errors
from lightning_dpo.training import route_lightning_logging, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Fit the configured run; return the optimised metric for Hydra sweepers.

    A bad setting or bad data is reported as one block without a traceback (exit code 1;
    ``HYDRA_FULL_ERROR=1`` shows the traceback).
    """
    route_lightning_logging()
    with report_user_errors():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
