"""`python -m bench` (`make bench`): start the servers and the load generator, measure, report.

Measurements are interleaved: for each in-flight level the three targets are measured one after
the other, and each round rotates which goes first. On a 2-core machine background noise drifts
over seconds; measuring bare-aio and the service close together keeps that drift out of their
ratio. Every child process is ended on the way out, whatever the exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import grpc

from bench import BARE_AIO, BARE_THREADS, ECHO_PATH, LABELS, SERVICE, WAIT_PATH, WAIT_SECONDS, BenchError
from bench.load import Command
from bench.procs import Child
from bench.report import goal, summarize, table
from bench.seed import GETSMTP_PATH, GETSMTP_REQUEST, store_profile
from bench.servers import DEFAULT_THREADS

# Measurement order within a level; rotated by one each round.
ORDER = (BARE_AIO, SERVICE, BARE_THREADS)
HOST = "127.0.0.1"
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
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    return args


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure_all(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    """Run every measurement; return the payload size and one dict per measurement."""
    with ExitStack() as stack:
        servers = {
            BARE_AIO: stack.enter_context(Child(BARE_AIO, "bench.servers", BARE_AIO)),
            BARE_THREADS: stack.enter_context(
                Child(BARE_THREADS, "bench.servers", BARE_THREADS, "--threads", str(args.threads))
            ),
            SERVICE: stack.enter_context(Child(SERVICE, "bench.servers", SERVICE)),
        }
        client = stack.enter_context(Child("load generator", "bench.load", patience=1.0))
        targets = {name: f"{HOST}:{child.read_port()}" for name, child in servers.items()}

        size = store_profile(targets[SERVICE])
        calls = {
            BARE_AIO: (ECHO_PATH, size),
            BARE_THREADS: (ECHO_PATH, size),
            SERVICE: (GETSMTP_PATH, len(GETSMTP_REQUEST)),
        }
        plan = [
            (round_, level, 0, ORDER[(i + round_) % len(ORDER)])
            for round_ in range(args.rounds)
            for level in args.in_flight
            for i in range(len(ORDER))
        ]
        # Apply-time calls (SMTP, Vault, OAuth) mostly wait on the network. This scenario shows
        # what such waiting calls do to quick calls in each server model.
        if args.waiting:
            plan += [
                (round_, WAITING_LEVEL, args.waiting, name)
                for round_ in range(args.rounds)
                for name in (BARE_AIO, BARE_THREADS)[:: 1 if round_ % 2 == 0 else -1]
            ]
        _progress(
            f"{len(plan)} measurements of {args.warmup:g}+{args.seconds:g} s, about"
            f" {len(plan) * (args.warmup + args.seconds):.0f} s; responses are {size} bytes"
        )
        measurements = []
        for step, (round_, level, waiting, name) in enumerate(plan, 1):
            method, payload_size = calls[name]
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
            )
            what = f"{LABELS[name]} at {level} in flight" + (f" with {waiting} waiting" if waiting else "")
            client.send_line(json.dumps(asdict(command)))
            reply = json.loads(client.read_line(timeout=args.warmup + args.seconds + ANSWER_SLACK))
            if not reply.pop("ok"):
                raise BenchError(f"{what}: {reply['error']}")
            if reply["errors"]:
                raise BenchError(f"{what}: {reply['errors']} calls failed, first: {reply['first_error']}")
            if reply["response_size"] != size:
                raise BenchError(f"{what}: response of {reply['response_size']} bytes, expected {size}")
            _progress(f"[{step}/{len(plan)}] {what}: {reply['qps']:.0f} QPS")
            measurements.append({"target": name, "in_flight": level, "waiting": waiting, "round": round_ + 1, **reply})
    return size, measurements


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through ExitStack, which ends the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    try:
        size, measurements = measure_all(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    rows = summarize(measurements, args.pick)
    verdict = goal(rows)
    env = environment()
    settings = {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "in_flight": list(args.in_flight),
        "rounds": args.rounds,
        "pick": args.pick,
        "threads": args.threads,
        "waiting": args.waiting,
        "wait_seconds": WAIT_SECONDS,
        "response_bytes": size,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps({"environment": env, "settings": settings, "results": rows, "goal": verdict}, indent=2))
        return 0
    header = (
        f"grpcio {env['grpcio']}, Python {env['python']}, {env['cpus']} CPUs. Each cell: {args.warmup:g} s"
        f" warm-up, {args.seconds:g} s measured"
        + (f", {args.pick} of {args.rounds} rounds" if args.rounds > 1 else "")
        + f"; one client process, one channel.\nAll responses {size} bytes (GetSmtp's); bare-threads has"
        f" {args.threads} workers. CPU: share of one core used by the server, the client, and all else."
        + (f"\n'+N waiting': N more calls in flight meanwhile, each answered after {WAIT_SECONDS:g} s"
           " without CPU (as apply-time calls wait on the network); not counted." if args.waiting else "")
    )
    print(table(rows, verdict, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
