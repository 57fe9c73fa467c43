"""A provider shipped as its own distribution is found through its entry point, in an environment
that holds nothing but what pip installed: the file provider, as any third-party plugin would be,
and the plugin guide's example, installed and tested the way the guide says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kits.pluginkit import write_guide_files
from tests.kits.support import copy_checkout, short_dir

# Run with `python -I`: no current directory on sys.path, no PYTHON* variables, no user site.
PROBE = textwrap.dedent("""\
    import json
    from importlib.metadata import distribution, entry_points

    eps = entry_points(group="smtpconfig")
    ep = eps["file"]
    module = ep.load()
    registered = []
    module.register_secret_providers(registered.append)
    main_files = [str(f) for f in distribution("smtpconfig").files or ()]
    print(json.dumps({
        "entry_points": sorted(e.name for e in eps),
        "value": ep.value,
        "dist": ep.dist.name,
        "module_file": module.__file__,
        "registered": [cls.name for cls in registered],
        "class": registered[0].__module__ + "." + registered[0].__qualname__,
        "main_ships_plugin": [f for f in main_files if "file_provider" in f or "file-provider" in f],
    }))
""")


@dataclass(frozen=True)
class FreshEnvironment:
    """A new virtualenv holding what a plugin author installs: smtpconfig with its `plugin-dev`
    extra, from a copy of this checkout, and the file provider distribution."""

    base: Path
    python: str
    env: dict[str, str]

    def run(self, *argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def pip_install(self, *what: str, cwd: Path) -> None:
        done = self.run(self.python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *what,
                        cwd=cwd, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def fresh() -> Iterator[FreshEnvironment]:
    base = short_dir("scext")
    try:
        sources = base / "src"
        copy_checkout(sources)
        assert (sources / "plugins" / "file-provider" / "pyproject.toml").is_file()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "SMTPCONFIG_"))}
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
        environment = FreshEnvironment(base, str(venv / "bin" / "python"), env)
        environment.pip_install("-c", "constraints.txt", ".[plugin-dev]", "./plugins/file-provider", cwd=sources)
        yield environment
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_the_file_provider_distribution_is_discovered_through_its_entry_point(fresh: FreshEnvironment) -> None:
    probe = fresh.run(fresh.python, "-I", "-c", PROBE, cwd=fresh.base, timeout=60)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert "file" in found["entry_points"]
    assert found["value"] == "smtpconfig_file_provider"
    assert found["dist"] == "smtpconfig-file-provider"
    assert found["registered"] == ["file"]
    assert found["class"] == "smtpconfig_file_provider.provider.FileProvider"
    # Loaded from the fresh environment's site-packages, not from this checkout.
    assert Path(found["module_file"]).is_relative_to(fresh.base / "venv"), found["module_file"]
    # The main distribution's explicit package list does not swallow the plugin's directory.
    assert found["main_ships_plugin"] == []


@pytest.mark.slow
def test_the_plugin_guide_followed_in_a_fresh_environment(fresh: FreshEnvironment) -> None:
    """docs/plugins.md step by step: its files, `pip install ./smtpconfig-env-provider`, the
    plugin seen by `smtpconfig plugins --local`, and the kit run by the pytest `plugin-dev` brought."""
    work = fresh.base / "author"
    work.mkdir()
    write_guide_files(work)
    fresh.pip_install("./smtpconfig-env-provider", cwd=work)
    bin_dir = Path(fresh.python).parent

    shown = fresh.run(str(bin_dir / "smtpconfig"), "plugins", "--local", cwd=work)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(r"^env +loaded +entry point +smtpconfig_env 0\.1\.0 +types: env$", shown.stdout, re.M), shown.stdout

    kit = fresh.run(str(bin_dir / "pytest"), "-rs", "-p", "no:cacheprovider", cwd=work / "smtpconfig-env-provider")
    assert kit.returncode == 0, kit.stdout + kit.stderr
    assert re.search(r"=+ 6 passed, 1 skipped in ", kit.stdout), kit.stdout
