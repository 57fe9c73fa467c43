"""The plugin author's guide stays true: every hook is documented, and its example works."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from smtpconfig import plugin
from smtpconfig.plugin import hookspecs
from tests.kits.pluginkit import GUIDE, guide_files, write_guide_files

ROOT = Path(__file__).resolve().parent.parent


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
            assert inspect.getdoc(obj), f"smtpconfig.plugin.{name} has no docstring"
    for method in ("resolve", "close"):
        assert inspect.getdoc(getattr(plugin.SecretProvider, method)), method


def test_the_guide_names_its_files_where_a_reader_sees_them() -> None:
    text = GUIDE.read_text()
    assert "<!--" not in text, "a reader of the rendered guide does not see HTML comments"
    assert set(guide_files()) == {
        "smtpconfig-env-provider/smtpconfig_env/__init__.py",
        "smtpconfig-env-provider/pyproject.toml",
        "smtpconfig-env-provider/test_env_provider.py",
    }
    tree = re.search(r"```text\n(smtpconfig-env-provider/\n.*?)```", text, re.S)
    assert tree is not None, "the guide shows the package directory's layout"
    for name in ("pyproject.toml", "smtpconfig_env/", "__init__.py", "test_env_provider.py"):
        assert name in tree.group(1)


def test_the_guides_example_passes_the_conformance_kit_and_its_opt_out_is_skipped(tmp_path: Path) -> None:
    """The guide's example as its author runs it: pytest on the kit, reading the summary."""
    write_guide_files(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider"],
        cwd=tmp_path / "smtpconfig-env-provider", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.splitlines()
    assert re.fullmatch(r"=+ 6 passed, 1 skipped in [\d.]+s =+", summary[-1]), result.stdout
    assert any(line.startswith("SKIPPED [1]") and line.endswith(
        "slow() returned None: the provider opted out of the timeout check") for line in summary), result.stdout
    assert re.search(r"test_env_provider\.py \.{5}s\.", result.stdout), result.stdout  # the timeout check is the 's'


def test_every_setting_and_permission_is_in_the_readme() -> None:
    """Read from the one settings table: each setting's TOML key, variable and flag."""
    from smtpconfig.core.permissions import PERMISSIONS
    from smtpconfig.settings import ENV_VARS, FLAGS, TABLE

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in TABLE if f"`{name}`" not in readme
               and f"`[[{name}]]`" not in readme and f"`[{name}]`" not in readme]
    assert not missing, f"settings missing from README.md: {missing}"
    missing_env = [var for var in ENV_VARS.values() if f"`{var}`" not in readme]
    assert not missing_env, f"environment variables missing from README.md: {missing_env}"
    missing_flags = [flag.name for flag in FLAGS.values() if f"`{flag.name}`" not in readme]
    assert not missing_flags, f"serve flags missing from README.md: {missing_flags}"
    assert all(f"`{p}`" in readme for p in PERMISSIONS)


def test_the_readmes_settings_table_gives_each_setting_its_own_variable_and_flag() -> None:
    """Each row of README's Configuration table that names settings shows exactly their variables
    and `serve` flags, as the settings table declares them, and every flag has its row."""
    from smtpconfig.settings import ENV_VARS, FLAGS, TABLE

    text = (ROOT / "README.md").read_text()
    header = "| setting (TOML) | env | flag | default |\n|---|---|---|---|\n"
    assert header in text, "README's Configuration table has moved or changed its columns"
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
    named: set[str] = set()
    for row in rows:
        setting, env, flag = row.split(" | ")[:3]
        names = [n for n in re.findall(r"`\[{0,2}(\w+)\]{0,2}`", setting) if n in TABLE]
        if not names:
            continue
        named.update(names)
        assert set(re.findall(r"`(SMTPCONFIG_\w+)`", env)) == {ENV_VARS[n] for n in names if n in ENV_VARS}, row
        assert set(re.findall(r"`(--[\w-]+)`", flag)) == {FLAGS[n].name for n in names if n in FLAGS}, row
    assert set(FLAGS) <= named, f"settings with a flag but no row: {set(FLAGS) - named}"
