"""The suite's own rules: processes only in ``slow`` tests, helpers only from ``helpers.py``."""

from __future__ import annotations

import ast
import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FORBIDDEN = ("tests.test_", "tests.conftest", "tests.scripts", "tests.distributed", "conftest")


def test_a_test_not_marked_slow_cannot_start_a_subprocess():
    with pytest.raises(AssertionError, match=r"starts a process: mark it pytest\.mark\.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_a_test_not_marked_slow_cannot_start_a_multiprocessing_process():
    process = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(AssertionError, match=r"starts a process: mark it pytest\.mark\.slow"):
        process.start()


@pytest.mark.slow
def test_a_slow_test_starts_processes():
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from X import ...`` and ``import X``)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_shared_helpers_come_only_from_helpers_py():
    """No test module or script imports a test module, a script or the conftest."""
    offenders = {
        str(path.relative_to(TESTS)): sorted(
            module for module in imported_modules(path) if module.startswith(FORBIDDEN)
        )
        for path in TESTS.rglob("*.py")
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


PACKAGE = TESTS.parent / "lightning_dpo"
FLOORS = {
    **dict.fromkeys(("batch", "pairs", "eval_mode", "integrity", "wiring"), 0),
    **dict.fromkeys(("layouts", "losses", "pretrained"), 1),
    **dict.fromkeys(("scoring", "metrics", "policy"), 2),
    "data": 3,
    "errors": 4,
    **dict.fromkeys(("config_types", "checkpoint_checks", "checkpoint_io", "output_folder"), 5),
    "reference": 6,
    **dict.fromkeys(("module", "callbacks"), 7),
    **dict.fromkeys(("training", "sweep_summary", "__init__"), 8),
}
"""The package's floors (README, Layout): each module or subpackage imports only from below."""


def package_arrows() -> set[tuple[str, str]]:
    """``(unit, unit)`` for each import between two top-level units of the package."""
    arrows = set()
    for path in PACKAGE.rglob("*.py"):
        unit = path.relative_to(PACKAGE).with_suffix("").parts[0]
        for module in imported_modules(path):
            if module.startswith("lightning_dpo."):
                target = module.split(".")[1]
                if target != unit:
                    arrows.add((unit, target))
    return arrows


def test_every_import_of_the_package_runs_down_a_floor():
    arrows = package_arrows()
    units = {unit for arrow in arrows for unit in arrow}
    assert units <= set(FLOORS), f"give these a floor: {sorted(units - set(FLOORS))}"
    upward = sorted(f"{a} -> {b}" for a, b in arrows if FLOORS[b] >= FLOORS[a])
    assert upward == []


def names_in(path: Path) -> set[str]:
    """Every identifier ``path`` defines or uses (names, attributes, arguments, keywords)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg | ast.keyword) and node.arg:
            found.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
    return found


NAMES_THE_REFERENCE = re.compile(r"(^|_)reference|Reference")
"""``reference_logps``, ``ReferenceSwapCallback``; not ``PreferenceRecord``."""


def test_the_data_layer_neither_imports_nor_names_the_reference():
    """Windows carry micro-batches; what the reference computes from them is kept there."""
    offenders = {}
    for path in (PACKAGE / "data").rglob("*.py"):
        imports = [m for m in imported_modules(path) if m.startswith("lightning_dpo.reference")]
        names = sorted(filter(NAMES_THE_REFERENCE.search, names_in(path)))
        if imports or names:
            offenders[str(path.relative_to(PACKAGE))] = imports + names
    assert offenders == {}


MAX_CLASS_LINES, MAX_FUNCTION_LINES = 250, 45


def test_no_class_or_function_of_the_package_is_too_long_to_read_at_once():
    """Classes up to 250 lines, functions up to 45, docstrings included."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines}")
    assert too_long == []


DATA_STAGES = {"records": 0, "tokens": 1, "batches": 2}
"""The data layer's stages in order; its other modules (settings, pipeline, the data
module) come after all three."""


def test_the_data_stages_import_only_earlier_stages():
    def stage(parts: tuple[str, ...]) -> int:
        return DATA_STAGES.get(parts[0], len(DATA_STAGES)) if len(parts) > 1 else len(DATA_STAGES)

    upward = []
    for path in (PACKAGE / "data").rglob("*.py"):
        parts = path.relative_to(PACKAGE / "data").with_suffix("").parts
        for module in imported_modules(path):
            if module.startswith("lightning_dpo.data."):
                target = tuple(module.split(".")[2:])
                if stage(target) > stage(parts):
                    upward.append(f"{'/'.join(parts)} -> {module}")
    assert upward == []


def test_no_two_parts_of_a_package_import_each_other():
    """Within a subpackage too, two parts import each other in one direction at most.

    ``reference.cache`` and ``reference.sources``, ``data.tokens`` and ``data.records``.
    """
    arrows = set()
    for path in PACKAGE.rglob("*.py"):
        unit = path.relative_to(PACKAGE).with_suffix("").parts[:2]
        for module in imported_modules(path):
            if module.startswith("lightning_dpo."):
                target = tuple(module.split(".")[1:3])
                if target != unit and target[0] == unit[0]:
                    arrows.add((".".join(unit), ".".join(target)))
    assert sorted(tuple(sorted(a)) for a in arrows if a[::-1] in arrows) == []
