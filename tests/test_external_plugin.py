"""A provider shipped as its own distribution is found through its entry point, in an environment
that holds nothing but what pip installed: the file provider, as any third-party plugin would be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import copy_checkout, short_dir


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


@pytest.mark.slow
def test_the_file_provider_distribution_is_discovered_through_its_entry_point() -> None:
    base = short_dir("scext")
    try:
        sources = base / "src"
        copy_checkout(sources)
        assert (sources / "plugins" / "file-provider" / "pyproject.toml").is_file()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "SMTPCONFIG_"))}
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
        python = str(venv / "bin" / "python")
        install = subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", "constraints.txt",
             ".", "./plugins/file-provider"],
            cwd=sources, env=env, capture_output=True, text=True, timeout=600,
        )
        assert install.returncode == 0, install.stdout + install.stderr

        probe = subprocess.run([python, "-I", "-c", PROBE], cwd=base, env=env, capture_output=True, text=True,
                               timeout=60)
        assert probe.returncode == 0, probe.stderr
        found = json.loads(probe.stdout)
        assert "file" in found["entry_points"]
        assert found["value"] == "smtpconfig_file_provider"
        assert found["dist"] == "smtpconfig-file-provider"
        assert found["registered"] == ["file"]
        assert found["class"] == "smtpconfig_file_provider.provider.FileProvider"
        # Loaded from the fresh environment's site-packages, not from this checkout.
        assert Path(found["module_file"]).is_relative_to(venv), found["module_file"]
        # The main distribution's explicit package list does not swallow the plugin's directory.
        assert found["main_ships_plugin"] == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
