"""The newcomer's path: a fresh copy of the repository, `make run`, then the CLI puts and gets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.kits.profiles import BASIC_V1
from tests.kits.support import copy_checkout, free_port, short_dir, wait_serving


@pytest.mark.slow
def test_make_run_from_a_fresh_clone_serves_and_the_cli_works() -> None:
    base = short_dir()
    clone = base / "clone"
    copy_checkout(clone)
    assert not (clone / ".venv").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTPCONFIG_", "VIRTUAL_ENV"))}
    env["SMTPCONFIG_LISTEN"] = f"127.0.0.1:{port}"
    log = (base / "make-run.log").open("wb")
    make = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        sock = clone / "smtpconfig-data" / "smtpconfig.sock"
        while not sock.exists():
            assert make.poll() is None, (base / "make-run.log").read_text()
            assert time.monotonic() < deadline, "make run did not start the server in time"
            time.sleep(0.5)
        wait_serving(f"127.0.0.1:{port}", proc=make)
        wait_serving(f"unix:{sock}", proc=make)

        cli = str(clone / ".venv" / "bin" / "smtpconfig")
        (clone / "profile.json").write_text(json.dumps(BASIC_V1))
        put = subprocess.run([cli, "put", "-f", "profile.json"], cwd=clone, env=env, capture_output=True, text=True)
        assert put.returncode == 0, put.stderr
        got = subprocess.run([cli, "get", "--api", "v1", "--json"], cwd=clone, env=env, capture_output=True, text=True)
        assert got.returncode == 0, got.stderr
        shown = json.loads(got.stdout)
        assert shown["Host"] == BASIC_V1["Host"] and shown["RelayUsername"] == BASIC_V1["RelayUsername"]
        assert "RelayPassword" not in shown
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            try:
                make.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
