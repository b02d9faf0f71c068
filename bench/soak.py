"""Soak: host RSS over a long run of the default job must stay flat.

    python bench/soak.py [--steps 1000]

Trains the embedded default (full-parameter DPO, host snapshot reference) for
``--steps`` optimizer steps and prints host RSS every 100 steps, and the ratio of
RSS at the last step to RSS at step 100 (1.00 = flat: nothing grows per step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
from _models import status_kib
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lightning_dpo.training import build

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def rss_mib() -> float:
    """Current resident set size of this process, in MiB (from /proc)."""
    return status_kib("VmRSS") / 1024


class RssEvery(pl.Callback):
    """Records RSS every ``every`` steps."""

    def __init__(self, every: int = 100) -> None:
        self.every = every
        self.samples: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        if trainer.global_step % self.every == 0:
            self.samples.append((trainer.global_step, rss_mib()))


def main() -> None:
    """Run the soak and print the RSS table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--output-dir", default="outputs/bench/soak")
    args = parser.parse_args()
    overrides = [f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = args.output_dir
        del cfg.hydra
    pl.seed_everything(cfg.seed)
    datamodule, module, trainer = build(cfg)
    recorder = RssEvery()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    base = dict(recorder.samples)[100]
    print("\n| step | host RSS (MiB) | ratio to step 100 |\n| ---: | ---: | ---: |")
    for step, rss in recorder.samples:
        print(f"| {step} | {rss:.1f} | {rss / base:.3f} |")


if __name__ == "__main__":
    main()
