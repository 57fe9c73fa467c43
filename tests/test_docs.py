"""The plugin author's guide stays true: every hook is documented, and its example works."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

from service import hookspecs, plugin

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "plugins.md"


def _hookspec_names() -> list[str]:
    return [
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "smtpconfig_spec")
    ]


def test_every_hook_is_documented_in_the_guide() -> None:
    names = _hookspec_names()
    assert names, "no hook specs found"
    text = GUIDE.read_text()
    missing = [n for n in names if f"#### `{n}`" not in text]
    assert not missing, f"hooks without a section in docs/plugins.md: {missing}"


def test_every_hook_follows_the_docstring_template() -> None:
    for name in _hookspec_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        for part in ("Called:", "Args:", "Returns:", "Since:"):
            assert part in doc, f"{name}'s docstring has no {part!r} section"


def test_public_plugin_api_is_documented() -> None:
    for name in plugin.__all__:
        obj = getattr(plugin, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"service.plugin.{name} has no docstring"
    for method in ("resolve", "close"):
        assert inspect.getdoc(getattr(plugin.SecretProvider, method)), method


def test_the_guides_example_passes_the_conformance_kit(tmp_path: Path) -> None:
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert {name for name, _ in blocks} >= {"smtpconfig_env/__init__.py", "pyproject.toml", "test_env_provider.py"}
    for name, body in blocks:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_env_provider.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_every_setting_and_permission_is_in_the_readme() -> None:
    from dataclasses import fields

    from service.settings import _ENV, PERMISSIONS, Settings

    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(Settings) if f.name != "sources" and f"`{f.name}`" not in readme
               and f"`[[{f.name}]]`" not in readme and f"`[{f.name}]`" not in readme]
    assert not missing, f"settings missing from README.md: {missing}"
    missing_env = [f"SMTPCONFIG_{key}" for key in _ENV.values() if f"SMTPCONFIG_{key}" not in readme]
    assert not missing_env, f"environment variables missing from README.md: {missing_env}"
    assert all(f"`{p}`" in readme for p in PERMISSIONS)
