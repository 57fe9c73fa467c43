"""`python -m bench` (`make bench`): start the servers and the load generator, measure, report.

Measurements are interleaved: for each in-flight level the targets of each suite (GetSmtp: bare-aio,
the service, bare-threads and, at the highest level, the echo that makes the guard's checks; then
bare-aio and the service over TLS with the token, then both over mTLS; CheckSecret: bare-aio, the
service, and at the highest level the echo that checks and records; ResolveSmtp: bare-aio, the
apply service, and its own such echo) are measured one after the other, and each round rotates
which goes first within each block of them (`SUITES`). On a 2-core machine background noise
drifts over seconds; measuring bare-aio and the service close together keeps that drift out of
their ratio. The resident memory of every GetSmtp server is read
once it is seeded and right after its last GetSmtp measurement at its highest in-flight level; the
load generator samples it during every measurement. Then come the TestSmtp phase (`bench.testsmtp`),
with the SMTP server running only for it, and the Vault phase (`bench.cold`), with OpenBao running
only for it. Every child process is ended on the way out, whatever the exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from base64 import b64encode
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc

from bench import (
    BARE_AIO,
    BARE_AIO_MTLS,
    BARE_AIO_TLS,
    BARE_THREADS,
    BASELINES,
    CHECK_SECRET,
    CHECKSECRET_SUITE,
    ECHO_PATH,
    EDGE_IN_FLIGHT,
    FLOORS,
    GETSMTP_SUITE,
    LABELS,
    MTLS,
    PLAINTEXT,
    RESOLVE_SMTP,
    RESOLVESMTP_SUITE,
    SERVICE,
    SERVICE_MTLS,
    SERVICE_TLS,
    SUITES,
    TLS_TARGETS,
    TRANSPORTS,
    WAIT_PATH,
    WAIT_SECONDS,
    WORKERS_IN_FLIGHT,
    BenchError,
    Transport,
    cold,
    edgephase,
    h2load,
    openbao,
    procs,
    testsmtp,
    workersphase,
)
from bench.certs import CLIENT_ID, Certs, make_certs
from bench.load import Command, memory
from bench.procs import Child, checked_reply
from bench.report import goals, resident_memory, summarize, table, transport_ratios
from bench.seed import (
    CHECKSECRET_PATH,
    GETSMTP_PATH,
    GETSMTP_REQUEST,
    RESOLVESMTP_PATH,
    RESOLVESMTP_REQUEST,
    answer,
    store_profile,
    store_resolving_profile,
    warm_file_secret,
)
from bench.servers import AUDITED_ECHO, DEFAULT_THREADS, service_options

HOST = "127.0.0.1"
# CheckSecret replies carry two Durations (latency, cache time left), ResolveSmtp's one (CacheFor),
# varints of 1 to 5 bytes each, so their size moves by a few bytes around the warm reply's that the
# echo servers are sent.
REPLY_SIZE_SLACK = 8
# Targets whose replies the load generator parses after the window, and as what.
REPLIES = {CHECK_SECRET: "CheckSecret", RESOLVE_SMTP: "ResolveSmtp"}
# TestSmtp calls through the service, and as many direct exchanges.
SMTP_CALLS = 100
# Secrets written to OpenBao for the Vault phase, half read directly and half through the service.
VAULT_SECRETS = 1000
# In-flight level of the waiting-calls scenario: a busy but not saturated service.
WAITING_LEVEL = 16
# Slack on top of warm-up + window before a silent load generator counts as hung.
ANSWER_SLACK = 60.0


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("in-flight levels must be 1 or more")
    return levels


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput and latency of smtpconfig's GetSmtp against bare grpcio echo servers.",
    )
    parser.add_argument("--seconds", type=_positive(float), default=3.0, help="measured window per run (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted calls before each window (default 1 s)")
    parser.add_argument("--in-flight", type=_levels, default=(1, 16, 64), help="levels, comma-separated (default 1,16,64)")
    parser.add_argument("--rounds", type=_positive(int), default=3, help="repeat every measurement (default 3)")
    parser.add_argument("--pick", choices=("median", "best"), default="median", help="round reported when --rounds > 1")
    parser.add_argument("--threads", type=_positive(int), default=DEFAULT_THREADS, help="bare-threads pool size")
    parser.add_argument(
        "--waiting", type=int, default=32,
        help=f"also measure the bare servers at {WAITING_LEVEL} in flight while this many calls wait"
        f" {WAIT_SECONDS:g} s each on I/O (default 32; 0 to skip)",
    )
    parser.add_argument(
        "--vault-secrets", type=_positive(int), default=VAULT_SECRETS,
        help=f"secrets in OpenBao for the cold Vault comparison, half each way (default {VAULT_SECRETS})",
    )
    parser.add_argument(
        "--skip-vault", action="store_true", help="leave out the Vault phase and the edge phase (and OpenBao)"
    )
    parser.add_argument("--skip-edge", action="store_true", help="leave out the edge phase")
    parser.add_argument(
        "--edge-in-flight", type=_positive(int), default=EDGE_IN_FLIGHT,
        help=f"in-flight level of the edge phase's throughput comparison (default {EDGE_IN_FLIGHT})",
    )
    parser.add_argument(
        "--smtp-calls", type=_positive(int), default=SMTP_CALLS,
        help=f"TestSmtp calls, and as many direct smtplib exchanges, in the TestSmtp phase (default {SMTP_CALLS})",
    )
    parser.add_argument("--skip-smtp", action="store_true", help="leave out the TestSmtp phase (and the SMTP server)")
    parser.add_argument(
        "--skip-workers", action="store_true", help="leave out the workers phase (serve --workers 2 against --workers 1)"
    )
    parser.add_argument(
        "--workers-in-flight", type=_positive(int), default=WORKERS_IN_FLIGHT,
        help=f"calls in flight in the workers phase, over all its load generators (default {WORKERS_IN_FLIGHT})",
    )
    parser.add_argument(
        "--workers-load", choices=("auto", *workersphase.LOADS), default="auto",
        help="what loads the workers phase: h2load (nghttp2's, a few µs of CPU per call), the Python load"
             " generators (about 100 µs per call, on the same cores as the workers), or auto: h2load when it"
             " is installed (default auto)",
    )
    parser.add_argument(
        "--skip-tls", action="store_true",
        help="leave out GetSmtp over TLS and mTLS (and the four servers that serve it)",
    )
    parser.add_argument(
        "--tls-in-flight", type=_levels, default=None,
        help="levels of GetSmtp over TLS and mTLS, comma-separated (default: those of --in-flight)",
    )
    parser.add_argument(
        "--event-loop", choices=("uvloop", "asyncio"), default=procs.event_loop,
        help="the event loop of every grpc.aio server, bare and service alike (default: serve's, uvloop where installed)",
    )
    parser.add_argument(
        "--audit-fsync", choices=("interval", "batch"), default="interval",
        help="the services' audit_fsync: fsync the audit log at most once a second (default), or before every answer",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.tls_in_flight is None:
        args.tls_in_flight = args.in_flight
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if not args.skip_vault and args.vault_secrets < 2 * args.rounds:
        parser.error(f"--vault-secrets must be at least {2 * args.rounds}: half each way, in {args.rounds} rounds")
    if not args.skip_smtp and args.smtp_calls < args.rounds:
        parser.error(f"--smtp-calls must be at least {args.rounds}, the number of rounds")
    return args


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _tls_args(transport: str, certs: Certs) -> tuple[str, ...]:
    """`bench.servers` options serving `transport` ("tls" or "mtls") with the bench certificates."""
    served = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    return served + (("--tls-client-ca", str(certs.ca)) if transport == MTLS else ())


def _levels_of(name: str, args: argparse.Namespace) -> tuple[int, ...]:
    """The in-flight levels at which target `name` is measured: the floors' echoes (`FLOORS`)
    only at the highest, where the QPS goals are."""
    if name in FLOORS.values():
        return (max(args.in_flight),)
    return args.tls_in_flight if name in TLS_TARGETS else args.in_flight


def _transport(name: str, certs: Certs) -> Transport:
    """How the client reaches target `name`."""
    tls = TRANSPORTS.get(name)
    if tls is None:
        return PLAINTEXT
    if tls == MTLS:
        return Transport(tls, str(certs.ca), str(certs.client_cert), str(certs.client_key))
    return Transport(tls, str(certs.ca))


def measure_all(args: argparse.Namespace) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, Any]]:
    """Run every measurement; return the response size of each suite (and of each target whose size
    differs from its suite's: the TLS services and their bare twins), one dict per measurement,
    and the phases' results: {"smtp": ..., "vault": ..., "memory": ...}, None for a phase left out;
    "memory" holds by GetSmtp target what was read from /proc: {"idle": ..., "after": ...}."""
    if not args.skip_vault:
        openbao.binary()  # missing: say so before minutes of measuring
    with ExitStack() as stack:
        # Entered first, so it is removed last: after OpenBao and the service stopped using it.
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smtpconfig-bench-")))
        # The apply service trusts this CA from its start; the TLS servers present its server leaf.
        certs = make_certs(scratch)
        # The file provider instances read from here: the services' operator allows that directory.
        secrets = ("--file-directory", str(scratch / "secrets"), "--audit-fsync", args.audit_fsync)
        # The echo servers are given the service's grpc options rather than import the service.
        options = ("--options", json.dumps(service_options()))
        servers = {
            BARE_AIO: stack.enter_context(Child(BARE_AIO, "bench.servers", BARE_AIO, *options)),
            BARE_THREADS: stack.enter_context(
                Child(BARE_THREADS, "bench.servers", BARE_THREADS, *options, "--threads", str(args.threads))
            ),
            SERVICE: stack.enter_context(Child(SERVICE, "bench.servers", SERVICE, *secrets)),
            # Another process: its stored profile (a password reference, then the local SMTP
            # server's) must not change what GetSmtp answers.
            RESOLVE_SMTP: stack.enter_context(
                Child("apply service", "bench.servers", SERVICE, "--ca-bundle", str(certs.ca), *secrets)
            ),
        }
        if not args.skip_tls:
            for name, kind in ((BARE_AIO_TLS, BARE_AIO), (SERVICE_TLS, SERVICE),
                               (BARE_AIO_MTLS, BARE_AIO), (SERVICE_MTLS, SERVICE)):
                given = options if kind == BARE_AIO else ()
                servers[name] = stack.enter_context(
                    Child(LABELS[name], "bench.servers", kind, *given, *_tls_args(TRANSPORTS[name], certs))
                )
        client = stack.enter_context(Child("load generator", "bench.load", patience=1.0))
        targets = {name: f"{HOST}:{child.read_port()}" for name, child in servers.items()}
        servers[CHECK_SECRET], targets[CHECK_SECRET] = servers[SERVICE], targets[SERVICE]  # another method

        sizes = {GETSMTP_SUITE: store_profile(targets[SERVICE])}
        (scratch / "secrets").mkdir()
        checksecret_request, sizes[CHECKSECRET_SUITE] = warm_file_secret(targets[SERVICE], scratch / "secrets")
        sizes[RESOLVESMTP_SUITE] = store_resolving_profile(targets[RESOLVE_SMTP], scratch / "secrets")
        # What each method's target is sent: its path and request. Each method's floor, the echo
        # that makes the guard's checks (and for an audited method writes the record), is sent the
        # same and answers the service's own (warm) answer.
        requests = {SERVICE: (GETSMTP_PATH, GETSMTP_REQUEST), SERVICE_TLS: (GETSMTP_PATH, GETSMTP_REQUEST),
                    SERVICE_MTLS: (GETSMTP_PATH, GETSMTP_REQUEST), CHECK_SECRET: (CHECKSECRET_PATH, checksecret_request),
                    RESOLVE_SMTP: (RESOLVESMTP_PATH, RESOLVESMTP_REQUEST)}
        for measured, floor in FLOORS.items():
            kept = scratch / f"{floor}.answer"
            kept.write_bytes(answer(targets[measured], *requests[measured]))
            sizes[floor] = kept.stat().st_size
            servers[floor] = stack.enter_context(Child(
                LABELS[floor], "bench.servers", AUDITED_ECHO, *options, "--client-streaming", "--checks",
                *(("--no-record",) if measured == SERVICE else ()), "--answer-file", str(kept),
            ))
            targets[floor] = f"{HOST}:{servers[floor].read_port()}"
        # Each TLS service stores the same profile; its GetSmtp response can differ from the plaintext
        # service's by a byte (update_time's nanos are a varint), so it and its bare-aio twin get a
        # size of their own: that service's response.
        for name in (SERVICE_TLS, SERVICE_MTLS):
            if name in servers:
                sizes[name] = sizes[BASELINES[name]] = store_profile(targets[name], _transport(name, certs))
        # The memory of the servers compared (the floors' echo is not one of them).
        getsmtp_targets = [name for blocks in SUITES[GETSMTP_SUITE] for name in blocks
                           if name in servers and name not in FLOORS.values()]
        reads: dict[str, dict[str, Any]] = {name: {"idle": memory(servers[name].pid)} for name in getsmtp_targets}
        # Memory under load is read at each target's highest level.
        top = {name: max(_levels_of(name, args)) for name in getsmtp_targets}
        # What the service is sent: (method, request size, request bytes or "" for that many "x").
        # The echo servers are sent as many bytes as the suite's responses have.
        calls = {name: (path, len(request), b64encode(request).decode()) for name, (path, request) in requests.items()}
        calls.update({floor: calls[measured] for measured, floor in FLOORS.items()})
        plan = [
            (round_, level, 0, suite, block[(i + round_) % len(block)])
            for round_ in range(args.rounds)
            for level in sorted({*args.in_flight, *args.tls_in_flight})
            for suite, blocks in SUITES.items()
            for block in ([n for n in block if n in servers and level in _levels_of(n, args)] for block in blocks)
            for i in range(len(block))
        ]
        # Apply-time calls (SMTP, Vault, OAuth) mostly wait on the network. This scenario shows
        # what such waiting calls do to quick calls in each server model.
        if args.waiting:
            plan += [
                (round_, WAITING_LEVEL, args.waiting, GETSMTP_SUITE, name)
                for round_ in range(args.rounds)
                for name in (BARE_AIO, BARE_THREADS)[:: 1 if round_ % 2 == 0 else -1]
            ]
        _progress(
            f"{len(plan)} measurements of {args.warmup:g}+{args.seconds:g} s, about"
            f" {len(plan) * (args.warmup + args.seconds):.0f} s; responses are {sizes[GETSMTP_SUITE]} bytes"
            f" (GetSmtp), about {sizes[CHECKSECRET_SUITE]} bytes (CheckSecret) and about"
            f" {sizes[RESOLVESMTP_SUITE]} bytes (ResolveSmtp)"
        )
        measurements = []
        for step, (round_, level, waiting, suite, name) in enumerate(plan, 1):
            size = sizes.get(name, sizes[suite])
            method, payload_size, request = calls.get(name, (ECHO_PATH, size, ""))
            command = Command(
                target=targets[name],
                method=method,
                payload_size=payload_size,
                in_flight=level,
                seconds=args.seconds,
                warmup=args.warmup,
                server_pid=servers[name].pid,
                waiting=waiting,
                wait_method=WAIT_PATH,
                request_b64=request,
                replies=REPLIES.get(name, ""),
                **_command_transport(_transport(name, certs)),
            )
            sized = f" ({suite} size)" if name == BARE_AIO and suite != GETSMTP_SUITE else ""
            what = f"{LABELS[name]}{sized} at {level} in flight" + (f" with {waiting} waiting" if waiting else "")
            client.send_line(json.dumps(asdict(command)))
            reply = checked_reply(client.read_line(timeout=args.warmup + args.seconds + ANSWER_SLACK), what)
            if name in REPLIES:
                low, high = reply["response_min"], reply["response_max"]
                if low < size - REPLY_SIZE_SLACK or high > size + REPLY_SIZE_SLACK:
                    raise BenchError(
                        f"{what}: responses of {low}-{high} bytes, expected {size} ± {REPLY_SIZE_SLACK}"
                    )
            elif reply["response_size"] != size:
                raise BenchError(f"{what}: response of {reply['response_size']} bytes, expected {size}")
            _progress(f"[{step}/{len(plan)}] {what}: {reply['qps']:.0f} QPS")
            measurements.append(
                {"suite": suite, "target": name, "in_flight": level, "waiting": waiting, "round": round_ + 1, **reply}
            )
            if suite == GETSMTP_SUITE and not waiting and name in reads and level == top[name]:
                reads[name]["after"] = memory(servers[name].pid)  # the last round's stays

        phases: dict[str, Any] = {"smtp": None, "vault": None, "edge": None, "workers": None, "memory": reads}
        if not args.skip_workers:
            load = args.workers_load
            if load == "auto":
                load = "h2load" if h2load.find() else "python"
                if load == "python":
                    _progress(f"workers phase: {h2load.MISSING}; the Python load generators share the cores instead")
            _progress(f"workers phase: GetSmtp of serve --workers 2 and --workers 1 at {args.workers_in_flight}"
                      f" in flight, load from {load}")
            workers = phases["workers"] = workersphase.measure(
                scratch, seconds=args.seconds, warmup=args.warmup, rounds=args.rounds,
                in_flight=args.workers_in_flight, answer_slack=ANSWER_SLACK, progress=_progress, load=load,
            )
            _progress(f"workers: {workers['ratio']:.2f}x the QPS of one process")
        if not args.skip_smtp:
            _progress(f"TestSmtp phase: {args.smtp_calls} TestSmtp calls and as many direct smtplib exchanges")
            smtp = phases["smtp"] = testsmtp.measure(
                targets[RESOLVE_SMTP], certs, args.smtp_calls, args.rounds, _progress
            )
            _progress(
                f"SMTP exchange p50: direct {smtp['direct']['p50_ms']:.3f} ms,"
                f" TestSmtp {smtp['service']['p50_ms']:.3f} ms"
            )
        if not args.skip_vault:
            _progress(f"Vault phase: {args.vault_secrets} secrets, cold CheckSecret and warm ResolveSmtp against"
                      " direct hvac reads and bare-aio echoes")
            bao = stack.enter_context(openbao.DevServer(scratch))
            vault = phases["vault"] = cold.measure(
                targets[SERVICE], targets[BARE_AIO], bao, args.vault_secrets, args.rounds, _progress
            )
            _progress(
                f"Vault phase p50: direct {vault['direct']['p50_ms']:.3f} ms, echo {vault['echo']['p50_ms']:.3f} ms,"
                f" cold CheckSecret {vault['service']['p50_ms']:.3f} ms,"
                f" warm ResolveSmtp {vault['resolve_smtp']['p50_ms']:.3f} ms"
            )
            if not args.skip_edge:
                # The plaintext service is the central now: its GetSmtp rows are measured.
                edge = phases["edge"] = edgephase.measure(
                    targets[SERVICE], bao, scratch, client, options,
                    seconds=args.seconds, warmup=args.warmup, rounds=args.rounds, in_flight=args.edge_in_flight,
                    answer_slack=ANSWER_SLACK, progress=_progress,
                )
                _progress(
                    f"edge: {edge['qps_ratio']:.2f} of bare-aio QPS at {edge['in_flight']} in flight;"
                    f" p50 {edge['latency_ratio']:.2f} of a direct hvac read's"
                )
    return sizes, measurements, phases


def _command_transport(transport: Transport) -> dict[str, str]:
    return {"tls": transport.tls, "ca_file": transport.ca, "cert_file": transport.cert, "key_file": transport.key}


def environment() -> dict[str, Any]:
    return {
        "event_loop": procs.event_loop,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through ExitStack, which ends the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.event_loop = args.event_loop
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    try:
        sizes, measurements, phases = measure_all(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    rows = summarize(measurements, args.pick)
    smtp, vault, edge, workers = phases["smtp"], phases["vault"], phases["edge"], phases["workers"]
    ratios = transport_ratios(rows)
    resident = resident_memory(rows, phases["memory"])
    verdicts = goals(rows, vault, edge, args.edge_in_flight, smtp=smtp, workers=workers, resident=resident)
    env = environment()
    settings = {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "in_flight": list(args.in_flight),
        "tls_in_flight": None if args.skip_tls else list(args.tls_in_flight),
        "rounds": args.rounds,
        "pick": args.pick,
        "threads": args.threads,
        "waiting": args.waiting,
        "wait_seconds": WAIT_SECONDS,
        "response_bytes": sizes[GETSMTP_SUITE],
        "checksecret_response_bytes": sizes[CHECKSECRET_SUITE],
        "resolvesmtp_response_bytes": sizes[RESOLVESMTP_SUITE],
        # GetSmtp over TLS: each service's own response size, also sent to its bare-aio twin.
        "tls_response_bytes": {name: sizes[name] for name in TLS_TARGETS if name in sizes},
        "smtp_calls": None if args.skip_smtp else args.smtp_calls,
        "vault_secrets": None if args.skip_vault else args.vault_secrets,
        "edge_in_flight": None if args.skip_vault or args.skip_edge else args.edge_in_flight,
        "workers_in_flight": None if args.skip_workers else args.workers_in_flight,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        # "goal" is GetSmtp's, as before the other goals were added; "goals" holds all of them.
        document = {"environment": env, "settings": settings, "results": rows, "transport_ratios": ratios,
                    "memory": resident, "smtp": smtp, "vault": vault, "edge": edge, "workers": workers,
                    "goal": verdicts[0], "goals": verdicts}
        print(json.dumps(document, indent=2))
        return 0
    header = (
        f"grpcio {env['grpcio']}, Python {env['python']}, {env['cpus']} CPUs, grpc.aio servers on"
        f" {env['event_loop']}'s event loop. Each cell: {args.warmup:g} s"
        f" warm-up, {args.seconds:g} s measured"
        + (f", {args.pick} of {args.rounds} rounds" if args.rounds > 1 else "")
        + f"; one client process, one channel.\nResponses {sizes[GETSMTP_SUITE]} bytes (GetSmtp's), and"
        f" {sizes[CHECKSECRET_SUITE]} ± a few in the CheckSecret suite, {sizes[RESOLVESMTP_SUITE]} ± a few in the"
        f" ResolveSmtp suite; bare-threads has {args.threads} workers."
        "\nCPU: share of one core used by the server, the client, and all else."
        + ("" if args.skip_tls else
           "\nTLS rows: one TLS connection per measurement, set up before timing, to the bench CA's P-256 server"
           f" certificate; TLS+token sends the bearer token, mTLS a client certificate ({CLIENT_ID}) and no"
           " token. Each bare-aio twin has the same server credentials and is sent the same metadata, and as"
           " many bytes as its service's response (a byte more or less than the plaintext one's, at most).")
        + (f"\n'+N waiting': N more calls in flight meanwhile, each answered after {WAIT_SECONDS:g} s"
           " without CPU (as apply-time calls wait on the network); not counted." if args.waiting else "")
    )
    print(table(rows, verdicts, header, vault, smtp, ratios, resident, edge, workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
