"""The server process: key handling, health, reflection, signals, and what it refuses to do."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smtpconfig.domain.crypto import KeyProblem
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.profiles import BASIC_V2, v2_profile
from tests.kits.support import ServerProcess, ServerThread, short_dir, wait_serving


@pytest.fixture
def data_dir():
    base = short_dir()
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


def _serve_once(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "serve", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_first_start_generates_an_owner_only_key_and_database(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        key = data_dir / "secret.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(base64.urlsafe_b64decode(key.read_text().strip())) == 32
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("smtpconfig.db", "smtpconfig.db-wal", "smtpconfig.sock"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finally:
        assert server.terminate() == 0
    assert not (data_dir / "smtpconfig.sock").exists()


def test_wrong_key_is_refused_with_a_clear_message(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        with server.channel() as channel:
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    finally:
        server.terminate()
    other = base64.urlsafe_b64encode(b"z" * 32).decode()
    result = _serve_once("--data-dir", str(data_dir), "--listen", "127.0.0.1:0", env={"SMTPCONFIG_KEY": other})
    assert result.returncode != 0
    assert "was encrypted with key" in result.stderr


def test_key_from_env_is_used_and_no_key_file_is_written(data_dir) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    server = ServerProcess(data_dir, env={"SMTPCONFIG_KEY": key}).start()
    try:
        assert not (data_dir / "secret.key").exists()
    finally:
        server.terminate()


def test_missing_configured_key_file_is_an_error(data_dir) -> None:
    result = _serve_once("--data-dir", str(data_dir), "--key-file", str(data_dir / "nope.key"))
    assert result.returncode != 0 and "does not exist" in result.stderr


def _listing(directory) -> dict[str, tuple[int, int, int]]:
    """Each file's (inode, size, mtime in ns): any write or replacement changes it."""
    return {p.name: (st.st_ino, st.st_size, st.st_mtime_ns) for p in directory.iterdir() for st in [p.lstat()]}


def test_a_deleted_key_file_beside_a_database_refuses_to_start_and_writes_nothing(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        with server.channel() as channel:
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    finally:
        assert server.terminate() == 0
    (data_dir / "secret.key").unlink()
    before = _listing(data_dir)
    result = _serve_once("--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
    assert result.returncode != 0
    assert f"key file {data_dir / 'secret.key'} is missing but {data_dir / 'smtpconfig.db'} exists" in result.stderr
    assert "SMTPCONFIG_KEY" in result.stderr
    assert _listing(data_dir) == before, "no new key, token, socket or database change"


KEY_MODES = [
    (0o640, "group may read"),
    (0o440, "read-only for owner and group, as a Kubernetes Secret with fsGroup"),
    (0o604, "others may read"),
    (0o620, "group may write: it could replace the key"),
    (0o610, "any group bit at all"),
]


@pytest.mark.parametrize(("mode", "why"), KEY_MODES, ids=[k[1] for k in KEY_MODES])
def test_a_key_file_others_can_use_refuses_to_start(mode: int, why: str) -> None:
    root = short_dir("keymode")
    try:
        key = root / "secret.key"
        key.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
        key.chmod(mode)
        server = ServerThread(root / "data", key_file=key)
        with pytest.raises(KeyProblem, match=rf"key file {key} can be read by others \(mode 0{mode:o}\); chmod 600"):
            server.start()
        assert not (root / "data" / "admin.token").exists() and not (root / "data" / "smtpconfig.db").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_key_file_only_its_owner_can_read_is_used(data_dir) -> None:
    key = data_dir.parent / "secret.key"
    key.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o400)
    server = ServerThread(data_dir, key_file=key).start()
    server.stop()


def test_health_and_reflection(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", "smtpconfig.v1.ConfigService", "smtpconfig.v2.ConfigService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for r in replies for s in r.list_services_response.service}
            assert {"smtpconfig.v1.ConfigService", "smtpconfig.v2.ConfigService", "grpc.health.v1.Health"} <= names
    finally:
        server.terminate()


def test_sigterm_drains_and_exits_cleanly(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    with server.channel() as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
        started = time.monotonic()
        assert server.terminate() == 0
    assert time.monotonic() - started < 10
    log = server.log()
    assert "draining" in log and "stopped" in log


def test_second_server_on_the_same_data_directory_is_refused(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        result = _serve_once("--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--unix-socket", "")
        assert result.returncode != 0 and "in use by another smtpconfig server" in result.stderr
    finally:
        server.terminate()


@pytest.mark.parametrize("address", ["0.0.0.0:2587", "[::]:2587", "192.0.2.1:2587", "example.com:2587"])
def test_non_loopback_listen_address_is_refused(data_dir, address: str) -> None:
    result = _serve_once("--data-dir", str(data_dir), "--listen", address)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert not data_dir.exists(), "nothing is created when settings are refused"


def test_a_taken_port_is_one_line_naming_the_address_and_the_setting(data_dir) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _serve_once("--data-dir", str(data_dir), "--listen", address)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "add_port" not in result.stderr
    complaint = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(complaint) == 1 and address in complaint[0] and "SMTPCONFIG_LISTEN=" in complaint[0]


def test_socket_of_a_running_server_is_not_taken_over(data_dir) -> None:
    server = ServerProcess(data_dir).start()
    try:
        other = data_dir.parent / "other"
        result = _serve_once("--data-dir", str(other), "--listen", "127.0.0.1:0", "--unix-socket", str(server.socket))
        assert result.returncode != 0 and "in use by a running server" in result.stderr
        assert server.socket.exists()
        wait_serving(server.target)
    finally:
        server.terminate()


def test_stale_socket_file_is_replaced(data_dir) -> None:
    import socket as sockets

    data_dir.mkdir(parents=True)
    stale = sockets.socket(sockets.AF_UNIX)
    stale.bind(str(data_dir / "smtpconfig.sock"))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    server = ServerProcess(data_dir).start()
    server.terminate()


def test_the_health_and_metrics_listeners_log_the_addresses_they_got(data_dir) -> None:
    """With port 0 the log is the only place that says where probes and scrapers must go."""
    import re
    import urllib.request

    env = {"SMTPCONFIG_HEALTH_LISTEN": "127.0.0.1:0", "SMTPCONFIG_METRICS_LISTEN": "127.0.0.1:0"}
    server = ServerProcess(data_dir, env=env).start()
    try:
        log = server.log()
        health = re.search(r"health checks \(grpc\.health\.v1 only, no TLS\) on (127\.0\.0\.1:(\d+))", log)
        metrics = re.search(r"metrics on (http://127\.0\.0\.1:(\d+)/metrics)", log)
        assert health and metrics, log
        assert int(health.group(2)) != 0 and int(metrics.group(2)) != 0
        wait_serving(health.group(1), timeout=10)
        with urllib.request.urlopen(metrics.group(1), timeout=5) as reply:
            assert "smtpconfig_rpc_requests_total" in reply.read().decode()
    finally:
        assert server.terminate() == 0


def test_a_socket_in_a_missing_directory_outside_the_data_directory_is_refused(data_dir) -> None:
    """Creating it would make a system directory (/run/smtpconfig) with the server's owner and
    umask; the operator creates it, with the owner and mode they mean."""
    missing = data_dir.parent / "run" / "smtpconfig"
    result = _serve_once("--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                         "--unix-socket", str(missing / "smtpconfig.sock"))
    assert result.returncode != 0
    assert f"the directory of unix_socket {missing / 'smtpconfig.sock'} does not exist" in result.stderr, result.stderr
    assert not missing.parent.exists(), "no directory is made outside the data directory"
    assert not data_dir.exists(), "refused before anything was created"


def test_a_socket_in_the_data_directory_gets_its_missing_directory(data_dir) -> None:
    server = ServerThread(data_dir, unix_socket=str(data_dir / "run" / "smtpconfig.sock")).start()
    try:
        assert stat.S_ISSOCK((data_dir / "run" / "smtpconfig.sock").lstat().st_mode)
        assert stat.S_IMODE((data_dir / "run").stat().st_mode) == 0o700
    finally:
        server.stop()


def test_a_failed_start_removes_the_data_directory_it_created(data_dir) -> None:
    """Port taken: the start is refused after the key and the admin token were written. They go
    with the directory this start made; a directory that was there stays as it was found."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken.setblocking(False)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        fresh = data_dir / "nested" / "data"
        result = _serve_once("--data-dir", str(fresh), "--listen", address)
        assert result.returncode != 0, result.stderr
        assert not data_dir.exists(), f"left behind: {sorted(p.name for p in data_dir.rglob('*'))}"

        data_dir.mkdir(mode=0o700)
        (data_dir / "note.txt").write_text("the operator's\n")
        result = _serve_once("--data-dir", str(data_dir), "--listen", address)
        assert result.returncode != 0, result.stderr
        assert (data_dir / "note.txt").read_text() == "the operator's\n"
        with pytest.raises(BlockingIOError):
            taken.accept()  # the refusal came at bind: nothing connected to the listener


@pytest.mark.parametrize("loop,env", [("uvloop", {}), ("asyncio", {"SMTPCONFIG_EVENT_LOOP": "asyncio"})])
def test_serve_runs_on_the_event_loop_it_is_set_to(data_dir, loop: str, env: dict[str, str]) -> None:
    """uvloop by default (it is a dependency here), asyncio's own loop when set; either serves the
    whole API, a change and its SIGTERM drain included."""
    server = ServerProcess(data_dir, env=env).start()
    try:
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
            assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=10).profile.host == BASIC_V2["Host"]
    finally:
        assert server.terminate() == 0
    assert f"; {loop} event loop;" in server.log()
