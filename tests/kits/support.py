"""Running real servers for tests: in-process on port 0, or as a `smtpconfig serve` subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smtpconfig.app import App
from smtpconfig.core.aio import new_event_loop
from smtpconfig.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/kits/support.py is two folders down


def copy_checkout(dest: Path) -> None:
    """What a fresh clone holds: every tracked file plus new files git does not ignore (no venv,
    no egg-info, no build output)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def short_dir(prefix: str = "sc") -> Path:
    """A short temporary directory: Unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


ADMIN_TOKEN = "admin.token"
# Tests call as fast as they like unless they test the limits themselves.
UNLIMITED = {"resolve_rate": 0.0, "test_rate": 0.0}


class TokenAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends a bearer token with every call of a channel, WatchSmtp streams included (tests, the
    benchmark)."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation, details, request):
        metadata = tuple(details.metadata or ()) + self._metadata
        return continuation(details._replace(metadata=metadata), request)

    def intercept_unary_stream(self, continuation, details, request):
        metadata = tuple(details.metadata or ()) + self._metadata
        return continuation(details._replace(metadata=metadata), request)


def token_channel(target: str, token: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel whose every call carries `token`."""
    base = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    return grpc.intercept_channel(base, TokenAuth(token))


class _Caller:
    """What tests use to call a running server as its admin."""

    data_dir: Path
    target: str

    @property
    def token_path(self) -> Path:
        return self.data_dir / ADMIN_TOKEN

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    def channel(self) -> grpc.Channel:
        """A channel to the server that calls as the admin identity."""
        return token_channel(self.target, self.token)

    @property
    def cli_args(self) -> tuple[str, ...]:
        """CLI flags that reach this server as its admin."""
        return ("--target", self.target, "--token-file", str(self.token_path))


class ServerThread(_Caller):
    """An `App` on port 0, running on its own event loop in a background thread."""

    def __init__(self, data_dir: Path, **settings) -> None:
        self.data_dir = data_dir
        settings = {**UNLIMITED, **settings}
        settings.setdefault("listen", ("127.0.0.1:0",))
        self.settings = Settings(data_dir=data_dir, grace_period=1.0, **settings)
        self.app = App(self.settings)
        # The loop `smtpconfig serve` would run it on (uvloop by default), so in-process servers
        # are tested as they are deployed.
        self._loop = new_event_loop(self.settings.event_loop)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.app.start()
        except BaseException as error:  # surfaced by start()
            self._error = error
            self._ready.set()
            await self.app.stop(0)
            return
        self._ready.set()
        await self._stopping.wait()
        await self.app.stop(1.0)

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    @property
    def target(self) -> str:
        return self.app.target

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)


def wait_serving(target: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll the gRPC health service until the server says SERVING."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving")
        try:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as error:
            last = error
        time.sleep(0.1)
    raise TimeoutError(f"{target} did not reach SERVING in {timeout}s: {last}")


class ServerProcess(_Caller):
    """`smtpconfig serve` in a subprocess, reached over its Unix socket; stderr kept for reading."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "smtpconfig.sock"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.args = [
            sys.executable, "-m", "smtpconfig.cli", "serve",
            "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--grace-period", "2", *extra,
        ]
        # One process unless a test says otherwise (`--workers N` overrides this): kill9() then
        # kills the server itself, not a supervisor whose workers would stop gracefully.
        self.env = {**os.environ, "SMTPCONFIG_RESOLVE_RATE": "0", "SMTPCONFIG_TEST_RATE": "0",
                    "SMTPCONFIG_WORKERS": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=self.env)
        log.close()
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log()}")
            time.sleep(0.05)
        wait_serving(self.target, proc=self.proc)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def retry_delay(error: grpc.RpcError) -> float:
    """Seconds of the google.rpc.RetryInfo detail of a refused call."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    assert status is not None, "no rich status on the error"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo detail")


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of the google.rpc.BadRequest detail of a failed call."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    assert status is not None, "no rich status on the error"
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class SilentListener:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def __enter__(self) -> SilentListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


def serving(**settings) -> Iterator[ServerThread]:
    """A `ServerThread` with `settings` in a fresh short data directory, for a fixture to yield
    from; stopped and removed afterwards."""
    data_dir = short_dir()
    server = ServerThread(data_dir, **settings).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
