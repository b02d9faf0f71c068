"""Every ``python train.py`` command of README.md parses and composes as written."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from lightning_dpo.checkpoint_io import AtomicCheckpointIO
from lightning_dpo.training import train
from tests.helpers import CONF_DIR, FAST_OVERRIDES, LEAN_OVERRIDES, compose_train_config

README = (CONF_DIR.parent / "README.md").read_text()
FLAGS = {"-m", "--multirun"}


def _commands() -> list[str]:
    """``python train.py ...`` lines of the README's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("&&")[-1].strip()
            if command.startswith("python train.py"):
                commands.append(command)
    return commands


COMMANDS = _commands()


def test_the_readme_has_train_commands():
    assert len(COMMANDS) >= 20


def _first_of_each_sweep(overrides: list[str]) -> list[str]:
    """The first job of a multirun: each sweep override at its first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            text = f"{override.get_key_element()}={value}"
        first.append(text)
    return first


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_composes(command):
    words = shlex.split(re.sub(r"<[^>]+>", "x", command), comments=True)[2:]
    flags = [i for i, word in enumerate(words) if word.startswith("-")]
    assert set(words[i] for i in flags) <= FLAGS, command
    # Hydra's parser takes flags before the overrides only (else: exit code 2).
    assert flags == list(range(len(flags))), f"{command}: put -m before the overrides"
    overrides = _first_of_each_sweep(words[len(flags) :])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose("train", overrides=overrides, return_hydra_config=True)


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _block(marker: str) -> str:
    (block,) = [block for block in PYTHON_BLOCKS if marker in block]
    return block


def test_readme_trainer_example_and_callbacks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(_block("trainer.fit("), "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.global_step == trainer.max_steps
    assert 0.0 <= float(trainer.callback_metrics["val/rewards/accuracies"]) <= 1.0
    exec(compile(_block("callbacks = ["), "README.md", "exec"), namespace)
    assert len(namespace["callbacks"]) == 4
    exec(compile(_block("AtomicCheckpointIO()"), "README.md", "exec"), namespace)
    assert isinstance(namespace["trainer"].strategy.checkpoint_io, AtomicCheckpointIO)
    assert namespace["trainer"].checkpoint_callback.last_every_minutes == 30


@pytest.mark.parametrize("model", ["full", "lora"])
def test_readme_local_gpt2_walkthrough_trains(tmp_path, monkeypatch, model):
    """The README's "Train on your own data" with a local GPT-2, on hh-shaped records."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_block("GPT2LMHeadModel"), "README.md", "exec"), {})
    prompt = (
        "\n\nHuman: Can you help me?\n\nAssistant: Sure, with what?\n\nHuman: A {}.\n\nAssistant:"
    )
    rows = [
        {"chosen": prompt.format(i) + f" Here's how {i}.", "rejected": prompt.format(i)}
        for i in range(40)
    ]
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = ["data=jsonl", f"data.source.path={data}", "model.pretrained=gpt2-local"]
    if model == "lora":
        overrides += ["model=lora", "model.lora.target_modules=[c_attn]"]
    cfg = compose_train_config(tmp_path / "run", [*overrides, *FAST_OVERRIDES, *LEAN_OVERRIDES])
    metrics = train(cfg)
    assert "val/rewards/accuracies" in metrics


def _bad_input_rows() -> list[str]:
    """The rows of README's "Bad input, tried" table (group headings left out)."""
    section = README.split("### Bad input, tried", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "`test_" in line]


def test_every_row_of_the_bad_input_table_names_a_test_that_exists():
    rows = _bad_input_rows()
    assert len(rows) >= 25
    for row in rows:
        found = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row)
        assert len(found) == 1, f"not one test named in: {row}"
        file, function = found[0]
        source = (CONF_DIR.parent / "tests" / file).read_text()
        assert f"def {function}(" in source, f"{file} has no {function}: {row}"
