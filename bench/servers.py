"""The servers the benchmark compares, each run as its own process.

    python -m bench.servers bare-aio [--options JSON] [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
    python -m bench.servers bare-threads [--options JSON] [--threads N]
    python -m bench.servers service [--ca-bundle PEM] [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
        [--file-directory DIR ...]
    python -m bench.servers bare-aio --unix PATH [--options JSON]
    python -m bench.servers edge --upstream HOST:PORT --upstream-token-file FILE --unix PATH
    python -m bench.servers service --stages [--file-directory DIR ...]
    python -m bench.servers audited-echo --answer-file FILE [--client-streaming [--checks [--no-record]]]
        [--options JSON] [--unix PATH]

Each serving TCP binds 127.0.0.1 port 0 and prints `PORT <n>`; with `--unix` (the edge phase's
servers) it serves the Unix socket PATH only and prints `PORT 0`. Then it serves until stdin
closes, or SIGTERM/SIGINT.

Each binds 127.0.0.1 port 0, prints `PORT <n>` on stdout once it accepts calls, then serves until
its stdin closes or it gets SIGTERM/SIGINT. Watching stdin means a server never outlives the
benchmark, even when the parent is killed without a chance to clean up.

Why a process each: a server sharing a process (and so a GIL and an event loop) with another server
or with the load generator would be measured together with them. Both echo servers use the
service's own SERVER_OPTIONS so the only differences left are the server model and the handler.
The benchmark passes them (`--options`, JSON) rather than have the echo servers import
`smtpconfig.app`: that import alone brings the whole service's modules (about 20 MiB resident),
and the echo servers' memory is the baseline the service's is compared with.

The grpc.aio servers (bare-aio, the service, the edge) all run on the event loop named by
SMTPCONFIG_EVENT_LOOP, `smtpconfig serve`'s own setting (`event_loop`), which the benchmark sets for
every child (`--event-loop`); when it is unset, on uvloop where installed, as `serve` does. The
server model compared is then one: grpc.aio on the same loop.

`bench.stages` uses two more: the service with `--stages`, which reads lines `stage NAME PATH` on its
stdin and from then on serves method PATH through that stage of its handling (`bench.stages`),
answering `STAGE NAME` on stdout; and `audited-echo`, which answers every method with the bytes of
`--answer-file` after checking the bench token and appending one audit line (as a unary handler,
or a client-streaming one with `--client-streaming`; with `--checks` too, after every other check
of the service's guard, written inline: `bench.stages.CheckedEcho`; `--no-record` leaves out the
audit line, as for a method that is not audited).

With `--tls-cert` and `--tls-key` the TCP port serves TLS, and with `--tls-client-ca` too it requires
a client certificate chaining to that CA (mTLS). bare-aio then builds its credentials as
`smtpconfig.api.tls.ReloadingCertificates` does for the service (dynamic credentials from one certificate
configuration), so the TLS of a bare-aio twin is the service's; only the service's check of its
files for a newer certificate at each handshake is left out, once per measurement and untimed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench import (
    BARE_AIO,
    BARE_THREADS,
    BENCH_TOKEN,
    ECHO_METHOD,
    ECHO_SERVICE,
    EDGE,
    SERVICE,
    WAIT_METHOD,
    WAIT_SECONDS,
)
from bench.certs import CLIENT_ID
from smtpconfig.core import aio

LISTEN = "127.0.0.1:0"
AUDITED_ECHO = "audited-echo"
# grpc's own examples use 10 workers; the GIL leaves little to gain from more on a 2-core machine.
DEFAULT_THREADS = 10


def _announce(port: int, unix: bool = False) -> None:
    """Tell the parent where to connect (`PORT 0` when serving a Unix socket); the one line this
    process writes to stdout."""
    if unix:
        port = 0
    elif not port:
        raise SystemExit(f"could not listen on {LISTEN}")
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def _on_stdin_eof(callback: Callable[[], None]) -> None:
    """Call `callback` (from a daemon thread) once stdin closes: the parent is done or gone."""

    def watch() -> None:
        try:
            sys.stdin.buffer.read()
        except (OSError, ValueError):
            pass
        callback()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


async def _until_stopped() -> None:
    """Return on SIGTERM, SIGINT or end of stdin."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def from_thread() -> None:
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already closed: we are exiting anyway
            pass

    _on_stdin_eof(from_thread)
    await stop.wait()


# --- echo servers -------------------------------------------------------------------------------


async def _echo_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _echo_sync(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


async def _wait_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(WAIT_SECONDS)
    return request


def _wait_sync(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(WAIT_SECONDS)
    return request


def echo_handler(echo: Callable, wait: Callable) -> grpc.GenericRpcHandler:
    """`/bench.Echo/Echo` returning the request bytes, and `/bench.Echo/Wait` returning them after
    WAIT_SECONDS. Serializers of None are grpc's identity: the bare servers do no
    (de)serialization at all, so they set the ceiling."""
    return grpc.method_handlers_generic_handler(
        ECHO_SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=None, response_serializer=None)
            for name, behaviour in ((ECHO_METHOD, echo), (WAIT_METHOD, wait))
        },
    )


@dataclass(frozen=True)
class Tls:
    """Server certificate and key, and the CA client certificates must chain to (mTLS) if any."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """As smtpconfig.api.tls.ReloadingCertificates makes them, with no reloading."""
        client_ca = self.client_ca.read_bytes() if self.client_ca else None
        config = grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=client_ca
        )
        return grpc.dynamic_ssl_server_credentials(config, lambda: None, require_client_authentication=bool(client_ca))


def service_options() -> tuple:
    """The service's SERVER_OPTIONS, for `--options` (this imports the service)."""
    from smtpconfig.app import SERVER_OPTIONS

    return SERVER_OPTIONS


async def run_bare_aio(options: tuple, tls: Tls | None = None, unix: Path | None = None) -> None:
    """The service's server model (grpc.aio, one event loop) with nothing but an echo behind it;
    on the Unix socket `unix` instead of TCP if given."""
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((echo_handler(_echo_async, _wait_async),))
    if unix is not None:
        port = server.add_insecure_port(f"unix:{unix}")
    elif tls:
        port = server.add_secure_port(LISTEN, tls.credentials())
    else:
        port = server.add_insecure_port(LISTEN)
    await server.start()
    try:
        _announce(port, unix is not None)
        await _until_stopped()
    finally:
        await server.stop(0)


def run_bare_threads(options: tuple, threads: int) -> None:
    """The alternative model: grpcio's synchronous server, one worker thread per call in progress."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=options)
    server.add_generic_rpc_handlers((echo_handler(_echo_sync, _wait_sync),))
    port = server.add_insecure_port(LISTEN)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _on_stdin_eof(stop.set)
    try:
        _announce(port)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(0).wait()


# --- the service --------------------------------------------------------------------------------


async def run_audited_echo(
    options: tuple, answer: bytes, client_streaming: bool, checks: bool = False, unix: Path | None = None,
    record: bool = True,
) -> None:
    """`bench.stages.AuditedEcho` on grpc.aio: the least an audited call costs a server in Python;
    with `checks`, `bench.stages.CheckedEcho`: that and every other check of the service's guard
    (without its audit line unless `record`). On the Unix socket `unix` instead of TCP if given."""
    from bench.stages import AuditedEcho, CheckedEcho

    with tempfile.TemporaryDirectory(prefix="smtpconfig-bench-audited-") as directory:
        server = grpc.aio.server(options=options)
        log = Path(directory) / "audit.jsonl"
        echo = CheckedEcho(answer, log, record=record) if checks else AuditedEcho(answer, log)
        server.add_generic_rpc_handlers((echo.handler(client_streaming),))
        port = server.add_insecure_port(LISTEN if unix is None else f"unix:{unix}")
        await server.start()
        try:
            _announce(port, unix is not None)
            await _until_stopped()
        finally:
            await server.stop(0)


async def _serve_stages(app) -> None:
    """Switch stages as told on stdin (`stage NAME PATH`, answered `STAGE NAME`) until it closes."""
    from bench.stages import StageSwitch

    switch = StageSwitch(app.routes)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        word, stage, path = (line.split() + ["", "", ""])[:3]
        if word != "stage":
            raise SystemExit(f"unknown command {line.strip()!r}")
        switch.apply(stage, path)
        sys.stdout.write(f"STAGE {stage}\n")
        sys.stdout.flush()


async def run_service(
    ca_bundle: Path | None = None, tls: Tls | None = None, file_directories: tuple[Path, ...] = (),
    audit_fsync: str = "interval", stages: bool = False,
) -> None:
    """The real `App`, as `smtpconfig serve` builds it, on TCP only (no Unix socket), with a fresh
    data directory and generated key, trusting `ca_bundle` for SMTP TLS if given, serving TLS (or
    mTLS) with `tls` if given. Callers are the bench token's identity and, over mTLS, the bench
    client certificate's URI SAN, both with every permission. This process owns the directory, so
    it is removed whenever the server stops, even when the parent was killed."""
    from smtpconfig.api.auth import token_hash
    from smtpconfig.app import App
    from smtpconfig.settings import Settings

    with tempfile.TemporaryDirectory(prefix="smtpconfig-bench-") as data_dir:
        app = App(Settings(
            data_dir=Path(data_dir), listen=(LISTEN,), unix_socket="", ca_bundle=ca_bundle,
            admin_token=False, tokens=(("bench", token_hash(BENCH_TOKEN)),),
            policy=(("bench", ("*",)), (CLIENT_ID, ("*",))),
            tls_cert_file=tls.cert if tls else None, tls_key_file=tls.key if tls else None,
            tls_client_ca_file=tls.client_ca if tls else None,
            resolve_rate=0.0, test_rate=0.0, file_directories=file_directories, audit_fsync=audit_fsync,
        ))
        try:
            await app.start()
            _announce(next(iter(app.ports.values())))
            await (_serve_stages(app) if stages else _until_stopped())
        finally:
            await app.stop(0)


async def run_edge(upstream: str, token_file: Path, unix: Path) -> None:
    """The real `App` as an edge (`upstream` set): it follows the service at `upstream`, calling it
    with the bench token read from `token_file`, and serves the Unix socket `unix` only, where the
    bench token's identity has every permission. No store or provider of its own."""
    from smtpconfig.api.auth import token_hash
    from smtpconfig.app import App
    from smtpconfig.settings import Settings

    with tempfile.TemporaryDirectory(prefix="smtpconfig-bench-edge-") as data_dir:
        app = App(Settings(
            data_dir=Path(data_dir), listen=(), unix_socket=str(unix), admin_token=False,
            tokens=(("bench", token_hash(BENCH_TOKEN)),), policy=(("bench", ("*",)),),
            upstream=(upstream,), upstream_token_file=token_file,
            resolve_rate=0.0, test_rate=0.0, max_concurrent_rpcs_per_identity=0,
        ))
        try:
            await app.start()
            _announce(0, unix=True)
            await _until_stopped()
        finally:
            await app.stop(0)


def _options(text: str | None) -> tuple:
    if text is None:
        return service_options()
    return tuple(tuple(pair) for pair in json.loads(text))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on the event loop of the grpc.aio servers (see the module docstring)."""
    chosen = os.environ.get("SMTPCONFIG_EVENT_LOOP", "").strip().lower() or aio.default_event_loop()
    aio.run(main, chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=(BARE_AIO, BARE_THREADS, SERVICE, EDGE, AUDITED_ECHO))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="bare-threads: pool size")
    parser.add_argument(
        "--options", help="bare-aio, bare-threads: grpc server options as JSON pairs (default: the service's)"
    )
    parser.add_argument("--ca-bundle", type=Path, help="service: PEM CA bundle trusted for SMTP TLS")
    parser.add_argument("--file-directory", type=Path, action="append", default=[],
                        help="service: a directory `file` provider instances may read (repeatable)")
    parser.add_argument("--tls-cert", type=Path, help="bare-aio, service: serve TLS with this certificate chain")
    parser.add_argument("--tls-key", type=Path, help="bare-aio, service: the certificate's key")
    parser.add_argument("--tls-client-ca", type=Path, help="bare-aio, service: require client certificates (mTLS)")
    parser.add_argument("--audit-fsync", choices=("interval", "batch"), default="interval",
                        help="service: the audit log's fsync policy (audit_fsync)")
    parser.add_argument("--unix", type=Path, help="bare-aio, edge, audited-echo: serve this Unix socket instead of TCP")
    parser.add_argument("--upstream", help="edge: host:port of the service it follows")
    parser.add_argument("--upstream-token-file", type=Path, help="edge: file holding its token for the upstream")
    parser.add_argument("--stages", action="store_true",
                        help="service: switch stages of a method's handling as told on stdin (bench.stages)")
    parser.add_argument("--answer-file", type=Path, help="audited-echo: the bytes every call is answered with")
    parser.add_argument("--client-streaming", action="store_true",
                        help="audited-echo: a client-streaming handler that reads the message (the service's shape)")
    parser.add_argument("--checks", action="store_true",
                        help="audited-echo: every other check of the service's guard too, written inline"
                             " (client-streaming)")
    parser.add_argument("--no-record", action="store_true",
                        help="audited-echo with --checks: no audit line (the checks of a method that is not audited)")
    args = parser.parse_args(argv)
    if (args.kind == AUDITED_ECHO) != (args.answer_file is not None):
        parser.error("audited-echo needs --answer-file, which is for audited-echo only")
    if args.checks and not args.client_streaming:
        parser.error("--checks is for audited-echo with --client-streaming (the service's shape)")
    if args.no_record and not args.checks:
        parser.error("--no-record is for audited-echo with --checks")
    if args.kind == EDGE and not (args.upstream and args.upstream_token_file and args.unix):
        parser.error("edge needs --upstream, --upstream-token-file and --unix")
    if args.unix and (args.tls_cert or args.kind not in (BARE_AIO, EDGE, AUDITED_ECHO)):
        parser.error("--unix is for bare-aio, edge and audited-echo, in plaintext")
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together, and --tls-client-ca needs them")
    if args.tls_cert and args.kind == BARE_THREADS:
        parser.error("bare-threads serves plaintext only")
    tls = Tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{args.kind}: %(levelname)s %(message)s")
    if args.kind == BARE_AIO:
        _run(run_bare_aio(_options(args.options), tls, args.unix))
    elif args.kind == BARE_THREADS:
        run_bare_threads(_options(args.options), args.threads)
    elif args.kind == EDGE:
        _run(run_edge(args.upstream, args.upstream_token_file, args.unix))
    elif args.kind == AUDITED_ECHO:
        _run(run_audited_echo(_options(args.options), args.answer_file.read_bytes(), args.client_streaming, args.checks,
                              args.unix, record=not args.no_record))
    else:
        _run(run_service(args.ca_bundle, tls, tuple(args.file_directory), args.audit_fsync, args.stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
