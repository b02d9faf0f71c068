"""Bad settings and bad data: one clear block naming the field, no traceback."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException

from lightning_dpo.config_types import accepts, expected
from lightning_dpo.errors import ConfigError, describe
from lightning_dpo.output_folder import folder_problem, require_writable
from lightning_dpo.training import build
from tests.helpers import FAST_OVERRIDES, REPO, compose_train_config, script_env


@pytest.mark.parametrize(
    ("hint", "value", "ok"),
    [
        (int, 3, True),
        (int, "abc", False),
        (int, True, False),  # a boolean is not a count
        (int, 2.5, False),
        (float, 3, True),
        (bool, 1, False),
        (int | None, None, True),
        (Literal["a", "b"], "c", False),
        (Literal[16, 32] | str, "bf16-mixed", True),
        (list[int] | int, "anything", True),  # hints other than plain ones are not judged
    ],
)
def test_accepts_plain_hints(hint, value, ok):
    assert accepts(hint, value) is ok


def test_expected_says_what_fits_in_words():
    assert expected(int | None) == "an integer or null"
    assert (
        expected(Literal[16, "bf16"] | Literal["32"] | None) == "one of [16, 'bf16', '32'] or null"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=abc", "trainer.max_steps: expected an integer, got 'abc'"),
        ("trainer.precision=17", "trainer.precision: expected one of [64, 32, 16, "),
        ("callbacks.model_checkpoint.save_last=maybe", "callbacks.model_checkpoint.save_last"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_before_anything_is_built(tmp_path, override, message):
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, override])
    with pytest.raises(ConfigError) as error:
        build(cfg)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batches.batch_size=8.5", "'8.5' of type 'float' could not be converted to Integer"),
        ("data.batches.bogus=1", "Key 'bogus' not in 'BatchSettings'"),
        ("data.batch_size=8", "Key 'batch_size' not in 'DataConfig'"),  # the groups' keys
    ],
)
def test_a_data_setting_of_the_wrong_type_or_name_is_refused_when_composed(
    tmp_path, override, message
):
    """The data settings' schema (lightning_dpo.data.settings): Hydra refuses before a run."""
    with pytest.raises(ConfigCompositionException) as error:
        compose_train_config(tmp_path, [*FAST_OVERRIDES, override])
    assert message in str(error.value.__cause__)
    assert override.split("=")[0] in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (
            "trainer.accumulate_grad_batches=0",
            ConfigError,
            "trainer.accumulate_grad_batches: expected an integer >= 1, got 0",
        ),
        (
            "data.batches.num_workers=-1",
            ValueError,
            "data.batches.num_workers must be >= 0, got -1",
        ),
        (
            "data.source.val_fraction=1.5",
            ValueError,
            "data.source.val_fraction must be in (0, 1), got 1.5",
        ),
        (
            "data.source.val_fraction=0",
            ValueError,
            "data.source.val_fraction must be in (0, 1), got 0",
        ),
    ],
)
def test_an_out_of_range_value_is_named_before_anything_is_built(
    tmp_path, override, error, message
):
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, override])
    with pytest.raises((error, InstantiationException)) as caught:
        build(cfg)
    assert message in describe(caught.value)


def test_describe_unwraps_what_hydra_was_building(tmp_path):
    cfg = compose_train_config(tmp_path, [*FAST_OVERRIDES, "loss.beta=0"])
    with pytest.raises(InstantiationException) as error:
        build(cfg)
    text = describe(error.value)
    assert text.startswith("loss.beta must be a finite number > 0, got 0")
    assert text.endswith("(building loss: lightning_dpo.losses.preference.PreferenceLoss)")


def _run_train(tmp_path, *overrides: str, full_error: bool = False):
    env = script_env(OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    command = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_train_py_shows_a_data_error_as_one_block_without_traceback(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": 5}\n')
    result = _run_train(tmp_path, "data=jsonl", f"data.source.path={data}", *FAST_OVERRIDES)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"{data}:1: field 'rejected': expected a" in output
    assert "Traceback" not in output
    assert "set HYDRA_FULL_ERROR=1 for the traceback" in output
    assert "field 'rejected'" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_train_py_shows_a_truncated_checkpoint_as_one_line_without_traceback(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(4096)}}, tmp_path / "whole.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((tmp_path / "whole.ckpt").read_bytes()[:8000])
    result = _run_train(tmp_path, f"ckpt_path={cut}", *FAST_OVERRIDES)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"CheckpointError: ckpt_path={cut} is not a complete PyTorch checkpoint" in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_hydra_full_error_still_gives_the_traceback(tmp_path):
    result = _run_train(tmp_path, "trainer.max_steps=abc", full_error=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "trainer.max_steps: expected an integer, got 'abc'" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["hydra.run.dir", "hydra.sweep.dir"])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, setting):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    multirun = ["-m", "loss.beta=0.1,0.2"] if setting == "hydra.sweep.dir" else []
    command = [sys.executable, "train.py", *multirun, f"{setting}={blocker / 'out'}"]
    env = script_env(OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {setting}={blocker / 'out'}: the output folder cannot be written ([Errno 20] "
        f"Not a directory: '{blocker / 'out'}'); choose another with {setting}=..."
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_the_output_folder_check_makes_the_folder_or_says_why_not(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    require_writable("hydra.run.dir", str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()
    (tmp_path / "file").write_text("")
    assert "Not a directory" in folder_problem(tmp_path / "file" / "run")
    with pytest.raises(SystemExit) as stopped:
        require_writable("hydra.run.dir", str(tmp_path / "file" / "run"))
    assert stopped.value.code == 1
    assert "the output folder cannot be written" in capsys.readouterr().err
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(OSError, match=r"hydra\.run\.dir="):
        require_writable("hydra.run.dir", str(tmp_path / "file" / "run"))
