"""Every ``python train.py`` command of README.md parses and composes as written."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import CONF_DIR

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
