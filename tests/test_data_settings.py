"""The data module's typed settings: one group per stage, checked when made, built by Hydra."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import instantiate

from lightning_dpo.data import (
    BatchSettings,
    DataSource,
    PreferenceDataModule,
    RecordSettings,
    TokenSettings,
)
from lightning_dpo.data.settings import as_settings
from tests.helpers import FAST_OVERRIDES, compose_train_config


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DataSource(val_fraction=1.0), r"data\.source\.val_fraction must be in \(0, 1\)"),
        (lambda: DataSource(num_val=0), r"data\.source\.num_val must be >= 1, got 0"),
        (lambda: DataSource(val_file="v.jsonl"), r"data\.source\.val_file requires"),
        (lambda: DataSource("a.jsonl", path="b.jsonl"), "path and train_file are aliases"),
        (lambda: DataSource(require_file=True), r"set data\.source\.path="),
        (lambda: RecordSettings(on_invalid="drop"), r"on_invalid must be one of \('error'"),
        (lambda: RecordSettings(format="alpaca"), r"data\.records\.format must be one of"),
        (lambda: RecordSettings(columns={"question": "q"}), "unknown fields"),
        (lambda: TokenSettings(max_length=1), "max_length must be >= 2, got 1"),
        (lambda: TokenSettings(max_length=8, max_prompt_length=8), r"in \[1, max_length - 1"),
        (lambda: BatchSettings(batch_size=0), r"data\.batches\.batch_size must be >= 1, got 0"),
        (lambda: BatchSettings(max_tokens=0), r"data\.batches\.max_tokens must be a positive"),
        (lambda: BatchSettings(num_workers=-1), r"data\.batches\.num_workers must be >= 0"),
        (lambda: BatchSettings(layout="rows"), r"data\.batches\.layout must be one of"),
    ],
)
def test_each_group_refuses_a_value_out_of_range_naming_its_key(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_path_alias_fills_train_file():
    assert DataSource(path="train.jsonl").train_file == "train.jsonl"


def test_a_group_given_as_a_mapping_is_the_same_group():
    """Hydra without ``_convert_``, ``load_from_checkpoint`` and users may pass plain dicts."""
    assert as_settings(BatchSettings, {"batch_size": 4}) == BatchSettings(batch_size=4)
    assert as_settings(TokenSettings, None) == TokenSettings()
    with pytest.raises(TypeError, match=r"unknown settings \['batch'\]; valid: \['batch_size'"):
        as_settings(BatchSettings, {"batch": 4})
    typed = PreferenceDataModule(source=DataSource(num_train=8, num_val=4))
    plain = PreferenceDataModule(source={"num_train": 8, "num_val": 4})
    assert typed.fingerprint("train") == plain.fingerprint("train")


def test_the_data_module_takes_a_few_grouped_parameters_and_records_them():
    parameters = inspect.signature(PreferenceDataModule.__init__).parameters
    assert list(parameters)[1:] == ["tokenizer", "source", "records", "tokens", "batches", "seed"]
    datamodule = PreferenceDataModule(batches=BatchSettings(batch_size=4), seed=3)
    assert datamodule.hparams.batches["batch_size"] == 4  # plain values, for any logger
    assert datamodule.hparams.seed == 3
    assert PreferenceDataModule(**datamodule.hparams).batches == datamodule.batches


def test_hydra_builds_the_groups_as_dataclasses(tmp_path):
    overrides = ["data.batches.batch_size=4", "data.tokens.max_length=48"]
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, *overrides])
    datamodule = instantiate(cfg.data)
    assert datamodule.batches == BatchSettings(batch_size=4)
    assert isinstance(datamodule.tokens, TokenSettings) and datamodule.tokens.max_length == 48
