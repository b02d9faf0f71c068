"""Turn a composed Hydra config into Lightning objects and fit them."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a config group dict (``callbacks``, ``logger``)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None]


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate the datamodule, module and trainer of a run config."""
    datamodule = instantiate(cfg.data)
    policy = instantiate(cfg.model, tokenizer=datamodule.tokenizer)
    module = instantiate(cfg.module, policy=policy, loss=instantiate(cfg.loss))
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the run described by ``cfg`` and return the final callback metrics.

    Args:
        cfg: A config composed from ``conf/train.yaml``.

    Returns:
        Every metric Lightning last reported (``val/rewards/accuracies``, ...) as floats.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        finish_loggers(trainer)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def finish_loggers(trainer: pl.Trainer) -> None:
    """Close a Weights & Biases run, so the next job of a multirun starts its own."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()
