"""Turn a composed Hydra config into Lightning objects and fit them."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from lightning_dpo.callbacks.progress import progress_bar
from lightning_dpo.checkpoint_checks import check_checkpoint_file
from lightning_dpo.config_types import check_types
from lightning_dpo.errors import ConfigError
from lightning_dpo.wiring import Wired, Wiring

log = logging.getLogger(__name__)


def build_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg[key]`` after checking its values against its target's type hints.

    Raises:
        ConfigError: A settings dataclass refused a value while Hydra built it from the
            config (``_convert_: object``: ``data.batches.batch_size must be >= 1, got 0``);
            the target's own errors come wrapped in Hydra's ``InstantiationException``.
    """
    node = OmegaConf.select(cfg, key)
    check_types(node, key)
    try:
        return instantiate(node, **kwargs)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def instantiate_group(cfg: DictConfig, key: str) -> dict[str, Any]:
    """Instantiate each entry of a config group dict (``callbacks``, ``logger``), by name."""
    group = cfg.get(key) or {}
    return {
        name: build_node(cfg, f"{key}.{name}") for name, entry in group.items() if entry is not None
    }


def connect_callbacks(callbacks: dict[str, Callback], datamodule: Any) -> None:
    """Wire, explicitly, what the callbacks need of each other and of the data.

    Every :class:`~lightning_dpo.wiring.Wired` callback gets one
    :class:`~lightning_dpo.wiring.Wiring`: the datamodule and the reference callback
    (``callbacks.reference``), instead of searching ``trainer.callbacks`` or reading
    ``trainer.datamodule`` itself.
    """
    wiring = Wiring(datamodule=datamodule, reference=callbacks.get("reference"))
    for callback in callbacks.values():
        if isinstance(callback, Wired):
            callback.connect(wiring)


def without_lr_monitor(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks less ``LearningRateMonitor``, which refuses a run without a logger."""
    kept = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("No logger (logger=none): the learning-rate monitor is left out.")
    return kept


def accumulation(cfg: DictConfig) -> int:
    """``trainer.accumulate_grad_batches`` (unset: 1), checked (Lightning passed 0 to the data).

    Raises:
        ConfigError: It is not a positive integer.
    """
    accumulate = cfg.trainer.get("accumulate_grad_batches")
    if accumulate is None:
        return 1
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches: expected an integer >= 1, got {accumulate!r}"
        )
    return accumulate


def trainer_arguments(cfg: DictConfig, callbacks: list[Callback]) -> dict[str, Any]:
    """What ``train.py`` adds to ``cfg.trainer``: callbacks, the progress bar, step units.

    ``trainer.val_check_interval`` counts optimizer steps in this project's config;
    Lightning counts training batches, so under ``accumulate_grad_batches=k`` an integer
    interval is passed on multiplied by ``k``.
    """
    arguments: dict[str, Any] = {"callbacks": callbacks}
    bar = progress_bar() if cfg.trainer.get("enable_progress_bar", True) else None
    if bar is not None:
        arguments["callbacks"] = [*callbacks, bar]
    interval = cfg.trainer.get("val_check_interval")
    accumulate = accumulation(cfg)
    if isinstance(interval, int) and not isinstance(interval, bool) and accumulate > 1:
        arguments["val_check_interval"] = interval * accumulate
    return arguments


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate the datamodule, module and trainer of a run config."""
    accumulation(cfg)  # before anything slow is built
    datamodule = build_node(cfg, "data")
    policy = build_node(cfg, "model", tokenizer=datamodule.tokenizer)
    module = build_node(cfg, "module", policy=policy, loss=build_node(cfg, "loss"))
    datamodule.connect(plan=module.plan_scoring(datamodule.requested_layout))  # probed once
    named = instantiate_group(cfg, "callbacks")
    connect_callbacks(named, datamodule)
    loggers: list[Logger] = list(instantiate_group(cfg, "logger").values())
    callbacks: list[Callback] = list(named.values())
    if not loggers:
        callbacks = without_lr_monitor(callbacks)
    arguments = trainer_arguments(cfg, callbacks)
    trainer = build_node(cfg, "trainer", logger=loggers or False, **arguments)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, module, trainer


def route_lightning_logging() -> None:
    """Send Lightning's log records to the handlers Hydra configured (console and ``train.log``).

    Lightning, imported before Hydra sets up logging, gives its loggers a console handler
    of their own and stops them propagating, so nothing of theirs (nor this package's
    ``rank_zero_info`` messages) reached ``train.log``.
    """
    root = logging.getLogger()
    if not root.handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the run described by ``cfg`` and return the final callback metrics.

    Args:
        cfg: A config composed from ``conf/train.yaml``.

    Returns:
        Every metric Lightning last reported (``val/rewards/accuracies``, ...) as floats.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path") is not None:
        check_checkpoint_file(cfg.ckpt_path)  # one line, before anything is built
    datamodule, module, trainer = build(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        finish_loggers(trainer)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def finish_loggers(trainer: pl.Trainer) -> None:
    """Close a Weights & Biases run, so the next job of a multirun starts its own."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
