"""The suite's own shape: test modules import what they share from `tests.kits`, never from one
another or from conftest.py, and a kit that offers fixtures is loaded as a pytest plugin by
tests/conftest.py rather than by importing the fixture's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULES = sorted([*TESTS.glob("*.py"), *(TESTS / "kits").glob("*.py")])


def _imported(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from ... import` and `import ...` in the file, nested ones too."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def _fixtures(path: Path) -> set[str]:
    """Names of the functions `path` decorates with `pytest.fixture` (called or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) == "pytest.fixture":
                    names.add(node.name)
    return names


def _name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def test_nothing_is_imported_from_a_test_module_or_conftest() -> None:
    bad = [f"{_name(path)} imports {module}" for path in MODULES for module, names in _imported(path)
           if module.startswith(("tests.test_", "tests.conftest"))
           or (module == "tests" and any(n.startswith("test_") or n == "conftest" for n in names))]
    assert not bad, f"move what is shared into tests/kits/: {bad}"


def test_every_kit_offering_fixtures_is_a_plugin_of_the_suite_and_its_fixtures_are_not_imported(
        pytestconfig: pytest.Config) -> None:
    offered = {_name(path): _fixtures(path) for path in sorted((TESTS / "kits").glob("*.py"))}
    offered = {module: names for module, names in offered.items() if names}
    assert offered, "no kit offers a fixture: this test looks in the wrong place"
    unloaded = [module for module in offered if not pytestconfig.pluginmanager.has_plugin(module)]
    assert not unloaded, f"add {unloaded} to pytest_plugins in tests/conftest.py"
    for path in MODULES:
        for module, names in _imported(path):
            imported = set(names) & offered.get(module, set())
            assert not imported, f"{_name(path)} imports the fixtures {sorted(imported)}: name them as arguments"
