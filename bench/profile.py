"""Where a server's CPU goes per call: `perf` samples of bare grpc.aio and of the service, same load.

    python -m bench.profile [--methods GetSmtp,CheckSecret,ResolveSmtp] [--in-flight 64]
                            [--seconds 3] [--warmup 1] [--rounds 3] [--frequency 999] [--json]

`make bench` says how much CPU a call costs each server (from /proc) and how much of it the event
loop's thread used. This says what that CPU was spent on. For each method it starts a bare
grpc.aio echo server and the service (as `make bench` does, each in its own process, on the same
event loop), drives each in turn from the load generator with the same calls as `make bench`
(the echo server is sent as many bytes as the method's answer has), and samples the server with
`perf record -a` (cpu-clock on every CPU, no call graphs) over the measured window, keeping the
server's threads' samples. Each sample names a thread and
the binary its instruction pointer was in; the samples are grouped by

- thread: the event loop (the process's main thread, where every call's Python runs, grpcio's
  Cython included), grpcio's C-core threads (`event_engine`), and the others (grpc.aio's
  completion-queue poller, which hands finished operations to the loop, and idle pools);
- code: the kernel (system calls, and the context switches of threads waking each other), the
  Python interpreter (every Python function, ours and asyncio's), grpcio (its Cython layer and C
  core), the event loop's own extension (uvloop or _asyncio), protobuf, the C runtime, and the
  rest (hashlib's OpenSSL among them).

Each group's share of the samples times the server's CPU per call from /proc (the same window) is
its CPU per call, so the figures add up to what `make bench` reports, and the difference column
shows where the service's extra CPU per call goes. Context switches per call (all threads, from
/proc) are shown too: in a virtual machine each costs microseconds of kernel time.

Needs `perf` (Debian: `apt install linux-perf`) and the right to sample the whole machine (root,
or kernel.perf_event_paranoid <= 0); it says so and stops otherwise. Results are medians over
rounds; rounds alternate which server goes first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from base64 import b64encode
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import BARE_AIO, ECHO_PATH, BenchError, procs
from bench.certs import make_certs
from bench.load import Command
from bench.procs import Child
from bench.seed import METHOD_PATHS, seed_method
from bench.servers import service_options

METHODS = tuple(METHOD_PATHS)
THREADS = ("event loop", "grpcio C-core threads", "other threads")
CODE = ("kernel", "Python interpreter", "grpcio", "event loop library", "protobuf", "C runtime", "other")
# Slack on top of warm-up + window before a silent load generator counts as hung.
ANSWER_SLACK = 60.0


def code_of(dso: str) -> str:
    """The group of `CODE` a binary (perf's shared-object column) belongs to."""
    name = os.path.basename(dso.strip())
    if name.startswith("[kernel") or name in ("[vdso]", "[vsyscall]"):
        return "kernel"
    if name.startswith("libpython") or name.startswith("python"):
        return "Python interpreter"
    if name.startswith("cygrpc"):
        return "grpcio"
    if name.startswith("loop.cpython") or name.startswith("_asyncio"):
        return "event loop library"
    if name.startswith("_message") or "protobuf" in name:
        return "protobuf"
    if name.startswith(("libc.so", "libc-", "ld-linux", "libstdc++", "libm.so", "libgcc_s", "libpthread")):
        return "C runtime"
    return "other"


def thread_of(pid: int, tid: int, command: str) -> str:
    """The group of `THREADS` a thread of server `pid` belongs to."""
    if tid == pid:
        return "event loop"
    if command.startswith("event_engine"):
        return "grpcio C-core threads"
    return "other threads"


def parse_report(text: str, pid: int, tids: set[int]) -> dict[tuple[str, str], int]:
    """Samples of server `pid` (its threads `tids`) by (thread group, code group), from `perf report
    --sort pid,dso -F sample,pid,dso --field-separator ;` of a machine-wide recording."""
    found: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(";")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        samples, thread, dso = int(parts[0]), parts[1], parts[2]
        tid, _, command = thread.partition(":")
        if not tid.isdigit() or int(tid) not in tids:
            continue
        key = (thread_of(pid, int(tid), command), code_of(dso))
        found[key] = found.get(key, 0) + samples
    return found


def per_call(samples: dict[tuple[str, str], int], server_us_per_call: float) -> dict[str, dict[str, float]]:
    """Each group's µs of CPU per call: its share of the samples times the CPU per call from /proc."""
    total = sum(samples.values())
    if not total:
        raise BenchError("perf recorded no samples of the server")
    table = {thread: dict.fromkeys(CODE, 0.0) for thread in THREADS}
    for (thread, code), count in samples.items():
        table[thread][code] += count / total * server_us_per_call
    return table


def threads(pid: int) -> set[int]:
    """The thread ids of `pid` now."""
    return {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of `pid` so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith((b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def check_perf() -> str:
    """The perf binary, or BenchError saying what is missing."""
    perf = shutil.which("perf")
    if perf is None:
        raise BenchError("perf is not installed (Debian: apt install linux-perf); bench.profile samples with it")
    probe = subprocess.run([perf, "record", "-q", "-a", "-e", "cpu-clock", "-o", os.devnull, "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise BenchError(
            "perf cannot sample the whole machine here (run as root, or set kernel.perf_event_paranoid"
            " to 0 or less): "
            + (probe.stderr.strip().splitlines() or ["no message"])[-1]
        )
    return perf


def _record(perf: str, output: Path, frequency: int, warmup: float, seconds: float) -> subprocess.Popen:
    """perf record of the whole machine over the window that starts `warmup` seconds from now.
    Machine-wide (per-CPU) sampling, filtered by thread afterwards: following a process's threads
    (`perf record -p`) hooks every context switch, which doubled the servers' CPU per call here."""
    return subprocess.Popen(
        [perf, "record", "-q", "-a", "-e", "cpu-clock", "-F", str(frequency), "-o", str(output),
         "-D", str(int(warmup * 1000)), "--", "sleep", f"{warmup + seconds:g}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _report(perf: str, data: Path, pid: int, tids: set[int]) -> dict[tuple[str, str], int]:
    result = subprocess.run(
        [perf, "report", "-i", str(data), "--stdio", "--sort", "pid,dso", "-F", "sample,pid,dso",
         "--field-separator", ";", "-g", "none"],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"perf report failed: {result.stderr.strip()[-500:]}")
    return parse_report(result.stdout, pid, tids)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description="Server CPU per call by thread and by code (perf), bare grpc.aio against the service.",
    )
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (default: all)")
    parser.add_argument("--in-flight", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted calls before each window (default 1 s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, medians reported (default 3)")
    parser.add_argument("--frequency", type=int, default=999, help="perf samples per second (default 999)")
    parser.add_argument(
        "--event-loop", choices=("uvloop", "asyncio"), default=procs.event_loop,
        help="the event loop of both servers (default: serve's, uvloop where installed)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of tables")
    args = parser.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"--methods: {', '.join(unknown) or 'none given'}; choose from {', '.join(METHODS)}")
    if args.in_flight < 1 or args.seconds <= 0 or args.warmup < 0 or args.rounds < 1 or args.frequency < 1:
        parser.error("--in-flight, --seconds, --rounds and --frequency must be positive, --warmup not negative")
    return args


def measure(args: argparse.Namespace, progress) -> dict[str, Any]:
    perf = check_perf()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smtpconfig-profile-")))
        certs = make_certs(scratch)
        secrets = scratch / "secrets"
        secrets.mkdir()
        bare = stack.enter_context(
            Child(BARE_AIO, "bench.servers", BARE_AIO, "--options", json.dumps(service_options()))
        )
        files = ("--file-directory", str(secrets))
        # As in `make bench`: ResolveSmtp's profile is another process's, so GetSmtp's answer
        # stays the profile it was sized for.
        servers = {"GetSmtp": stack.enter_context(Child("service", "bench.servers", "service", *files))}
        servers["CheckSecret"] = servers["GetSmtp"]
        if "ResolveSmtp" in args.methods:
            servers["ResolveSmtp"] = stack.enter_context(
                Child("apply service", "bench.servers", "service", "--ca-bundle", str(certs.ca), *files)
            )
        client = stack.enter_context(Child("load generator", "bench.load", patience=1.0))
        bare_target = f"127.0.0.1:{bare.read_port()}"
        targets = {method: f"127.0.0.1:{child.read_port()}" for method, child in servers.items()
                   if method != "CheckSecret"}
        targets["CheckSecret"] = targets["GetSmtp"]
        # What each method sends: (path, request bytes), and its answer's size (the echo's request).
        sends = {method: seed_method(method, targets[method], secrets) for method in METHODS
                 if method in args.methods}

        def one(method: str, kind: str, round_: int) -> dict[str, Any]:
            path, request, size = sends[method]
            server, where = (bare, bare_target) if kind == "bare" else (servers[method], targets[method])
            command = Command(
                target=where, method=ECHO_PATH if kind == "bare" else path,
                payload_size=size if kind == "bare" else len(request), in_flight=args.in_flight,
                seconds=args.seconds, warmup=args.warmup, server_pid=server.pid,
                request_b64="" if kind == "bare" else b64encode(request).decode(),
            )
            data = scratch / f"{method}-{kind}-{round_}.data"
            switches, tids = context_switches(server.pid), threads(server.pid)
            recorder = _record(perf, data, args.frequency, args.warmup, args.seconds)
            client.send_line(json.dumps(asdict(command)))
            line = client.read_line(timeout=args.warmup + args.seconds + ANSWER_SLACK)
            switches = context_switches(server.pid) - switches
            tids |= threads(server.pid)
            _, err = recorder.communicate(timeout=ANSWER_SLACK)
            if recorder.returncode != 0:
                raise BenchError(f"perf record failed: {err.strip()[-500:]}")
            reply = procs.checked_reply(line, f"{method} ({kind})")
            if reply["server_cpu"] is None:
                raise BenchError("the server's CPU could not be read from /proc")
            us = reply["server_cpu"] / reply["qps"] * 1e6
            samples = _report(perf, data, server.pid, tids)
            data.unlink()
            # Switches over the whole measurement (warm-up and connecting included), per call at
            # the window's rate: both servers are counted the same way.
            calls = reply["qps"] * (args.warmup + args.seconds)
            progress(f"{method}, {kind}, round {round_ + 1}: {reply['qps']:.0f} QPS, {us:.0f} µs of server CPU a call")
            return {
                "qps": reply["qps"], "server_us_per_call": us,
                "loop_us_per_call": (reply["server_loop_cpu"] or 0.0) / reply["qps"] * 1e6,
                "client_us_per_call": reply["client_cpu"] / reply["qps"] * 1e6,
                "switches_per_call": switches / calls, "samples": sum(samples.values()),
                "groups": per_call(samples, us),
            }

        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"bare": [], "service": []} for m in args.methods}
        for round_ in range(args.rounds):
            for method in args.methods:
                for kind in ("bare", "service")[:: 1 if round_ % 2 == 0 else -1]:
                    rounds[method][kind].append(one(method, kind, round_))
    return {
        "settings": {"in_flight": args.in_flight, "seconds": args.seconds, "warmup": args.warmup,
                     "rounds": args.rounds, "frequency": args.frequency, "event_loop": args.event_loop},
        "methods": {method: {kind: _median(runs) for kind, runs in by_kind.items()} for method, by_kind in rounds.items()},
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("qps", "server_us_per_call", "loop_us_per_call", "client_us_per_call", "switches_per_call", "samples")
    summary: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in keys}
    summary["groups"] = {
        thread: {code: statistics.median(run["groups"][thread][code] for run in runs) for code in CODE}
        for thread in THREADS
    }
    return summary


def _rounds(count: int) -> str:
    return f"medians of {count} rounds" if count > 1 else "1 round"


def render(result: dict[str, Any]) -> str:
    """One table per method: µs of server CPU per call by thread and code, bare, service, difference."""
    settings = result["settings"]
    out = [
        f"Server CPU per call, µs, at {settings['in_flight']} in flight on {settings['event_loop']}"
        f" (perf, machine-wide cpu-clock at {settings['frequency']} Hz; {_rounds(settings['rounds'])} of"
        f" {settings['warmup']:g}+{settings['seconds']:g} s)",
    ]
    for method, kinds in result["methods"].items():
        bare, service = kinds["bare"], kinds["service"]
        out += ["", f"{method}: {service['qps']:.0f} QPS against bare grpc.aio {bare['qps']:.0f}"
                    f" ({service['qps'] / bare['qps']:.2f})", "",
                f"| thread | code | bare grpc.aio | {method} | difference |", "|---|---|---|---|---|"]
        for thread in THREADS:
            for code in CODE:
                b, s = bare["groups"][thread][code], service["groups"][thread][code]
                if b < 0.5 and s < 0.5:
                    continue
                out.append(f"| {thread} | {code} | {b:.1f} | {s:.1f} | {s - b:+.1f} |")
            b = sum(bare["groups"][thread].values())
            s = sum(service["groups"][thread].values())
            out.append(f"| {thread} | all | {b:.1f} | {s:.1f} | {s - b:+.1f} |")
        out += [
            f"| all | all (/proc) | {bare['server_us_per_call']:.1f} | {service['server_us_per_call']:.1f}"
            f" | {service['server_us_per_call'] - bare['server_us_per_call']:+.1f} |",
            f"| event loop | all (/proc) | {bare['loop_us_per_call']:.1f} | {service['loop_us_per_call']:.1f}"
            f" | {service['loop_us_per_call'] - bare['loop_us_per_call']:+.1f} |",
            f"| load generator | all (/proc) | {bare['client_us_per_call']:.1f} | {service['client_us_per_call']:.1f}"
            f" | {service['client_us_per_call'] - bare['client_us_per_call']:+.1f} |",
            f"| context switches per call | | {bare['switches_per_call']:.1f} | {service['switches_per_call']:.1f}"
            f" | {service['switches_per_call'] - bare['switches_per_call']:+.1f} |",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return procs.run_tool("bench.profile", parse_args(argv), measure, render)


if __name__ == "__main__":
    sys.exit(main())
