"""experiment= presets run; cluster presets (ddp, fsdp, SLURM launcher) compose."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import OmegaConf

from lightning_dpo.callbacks.progress import StepBoundedRichProgressBar
from lightning_dpo.reference.strategies import check_supported_strategy
from lightning_dpo.training import build, train
from tests.helpers import CONF_DIR, FAST_OVERRIDES, compose_train_config

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


def test_the_presets_are_found():
    assert {"smoke", "lora_ipo", "dpo_sft_warmup", "rpo_sq"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs(tmp_path, experiment):
    cfg = compose_train_config(
        tmp_path, [f"experiment={experiment}", "++trainer.fast_dev_run=true", *FAST_OVERRIDES]
    )
    metrics = train(cfg)
    assert "val/rewards/accuracies" in metrics


def test_lora_ipo_preset_sets_model_and_loss(tmp_path):
    cfg = compose_train_config(tmp_path, ["experiment=lora_ipo"])
    assert cfg.model.lora.r == 16
    assert cfg.loss.objective._target_ == "lightning_dpo.losses.ipo_loss"


def test_early_stopping_choice_adds_the_callback(tmp_path):
    cfg = compose_train_config(tmp_path, ["callbacks=early_stopping"])
    assert cfg.callbacks.early_stopping.monitor == "val/rewards/accuracies"
    assert "hf_export" in cfg.callbacks  # the defaults stay


def _compose_with_hydra(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_fsdp_preset_builds_fsdp2_strategy_the_reference_supports(tmp_path):
    cfg = compose_train_config(tmp_path, ["trainer=fsdp", "trainer.devices=4"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy._data_parallel_size == 4
    check_supported_strategy(strategy)


def test_ddp_preset(tmp_path):
    cfg = compose_train_config(tmp_path, ["trainer=ddp", "trainer.devices=4"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 4, "gpu")


def test_slurm_launcher_preset_matches_tasks_to_devices():
    cfg = _compose_with_hydra(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.devices=4"]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 4
    assert launcher["partition"] == "gpu"


def test_a_bare_run_needs_two_presets(tmp_path):
    cfg = compose_train_config(tmp_path, ["callbacks=minimal", "logger=none", *FAST_OVERRIDES])
    assert list(cfg.callbacks) == ["reference"]
    datamodule, module, trainer = build(cfg)
    assert [type(c).__name__ for c in trainer.callbacks if not _lightning_default(c)] == [
        "ReferenceSwapCallback"
    ]
    assert trainer.loggers == []
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4
    # No log, export, plot or samples: only Lightning's own default checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


def test_no_logger_with_the_default_callbacks_drops_only_the_lr_monitor(tmp_path):
    _, _, trainer = build(compose_train_config(tmp_path, ["logger=none", *FAST_OVERRIDES]))
    names = {type(c).__name__ for c in trainer.callbacks}
    assert "LearningRateMonitor" not in names
    assert {"ReferenceSwapCallback", "LastStepCheckpoint", "HFExportCallback"} <= names


def _lightning_default(callback) -> bool:
    """Callbacks Lightning adds by itself (progress bar, model summary)."""
    return type(callback).__module__.startswith("lightning.pytorch.callbacks")


def test_the_progress_bar_names_max_steps_not_a_negative_epoch():
    bar = StepBoundedRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=300)
    assert bar._get_train_description(4).strip() == "Epoch 4 (max_steps=300)"
    bar._trainer = SimpleNamespace(max_epochs=3, max_steps=-1)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"
