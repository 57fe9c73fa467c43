"""The workers phase: GetSmtp QPS of `smtpconfig serve --workers 2` against `--workers 1`.

Both are real `smtpconfig serve` processes (SQLite, plaintext TCP, the bench token), started for
this phase and stopped after it. The load comes from `GENERATORS` load-generator processes at once,
each with `in_flight / GENERATORS` calls over `CHANNELS` connections of its own: with SO_REUSEPORT
the kernel gives each connection to one worker, so one connection would measure one worker. Each
round measures both services one after the other, rounds alternating which goes first; the ratio
is the median over rounds of (workers = 2 QPS) / (workers = 1 QPS) of the same round.

CPU is read from /proc over each window: the server's (the supervisor and its workers together),
each load generator's, and what else the machine did. On a 2-core machine the load generators
share the cores with the workers: the CPU per call of server and client shows what is left, and
why a ratio below 2 (or below the goal) can be the machine's, not the server's.

With `load = "h2load"` (`bench.h2load`) one h2load process sends the same calls over as many
connections (`GENERATORS` x `CHANNELS`) at a few µs of CPU per call instead of about a hundred, so
the workers get nearly all the cores. Each measurement is then a fixed number of calls (about
`seconds` worth at the rate of the warm-up run before it), all checked to have been answered.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import BENCH_TOKEN, BenchError
from bench import h2load as h2
from bench.load import Command, memory
from bench.procs import Child, checked_reply, child_env
from bench.seed import GETSMTP_PATH, GETSMTP_REQUEST, store_profile
from smtpconfig.api.auth import token_hash

GENERATORS = 2
CHANNELS = 4
COUNTS = (2, 1)
READY_WITHIN = 60.0
LOADS = ("python", "h2load")
# The fewest calls an h2load run sends, however slow the warm-up was.
H2LOAD_MIN_CALLS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(directory: Path, workers: int, port: int) -> Path:
    path = directory / f"workers-{workers}.toml"
    path.write_text(
        f'data_dir = "{directory / f"data-{workers}"}"\n'
        f'listen = ["127.0.0.1:{port}"]\nunix_socket = ""\nworkers = {workers}\nadmin_token = false\n'
        "resolve_rate = 0\ntest_rate = 0\nlog_level = \"warning\"\n"
        f'[[tokens]]\nidentity = "bench"\nsha256 = "{token_hash(BENCH_TOKEN)}"\n'
        '[policy]\nbench = ["*"]\n'
    )
    return path


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _wait_listening(port: int, child: Child, log: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"smtpconfig serve ended ({child.proc.returncode}): {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"smtpconfig serve did not listen on {port} in {READY_WITHIN:.0f}s")


def _start(directory: Path, workers: int, output) -> tuple[Child, str]:
    port = _free_port()
    config = _config(directory, workers, port)
    argv = [sys.executable, "-m", "smtpconfig.cli", "serve", "--config", str(config)]
    child = Child.program(f"smtpconfig serve --workers {workers}", argv, env=child_env(), output=output)
    _wait_listening(port, child, Path(output.name))
    return child, f"127.0.0.1:{port}"


def _wait_workers(child: Child, count: int) -> list[int]:
    """The worker pids once all `count` serve (a supervisor's children), or [] for one process."""
    if count == 1:
        return []
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        pids = _children(child.pid)
        if len(pids) == count:
            return pids
        time.sleep(0.1)
    raise BenchError(f"the supervisor did not start {count} workers in {READY_WITHIN:.0f}s")


def measure(
    directory: Path, *, seconds: float, warmup: float, rounds: int, in_flight: int, answer_slack: float,
    progress: Callable[[str], None], load: str = "python",
) -> dict[str, Any]:
    """Start both services and the load (`load`: "python", the `bench.load` generators, or
    "h2load"), measure, stop them on every way out."""
    if load not in LOADS:
        raise BenchError(f"unknown load {load!r}; use one of {', '.join(LOADS)}")
    h2load = h2.available_or_raise() if load == "h2load" else None
    started: list[Child] = []
    log = (directory / "workers-phase.log").open("wb")
    try:
        services: dict[int, tuple[Child, str, list[int]]] = {}
        answer_sizes: dict[int, int] = {}  # GetSmtp's answer of each service (its stored times differ)
        for count in COUNTS:
            child, target = _start(directory, count, log)
            started.append(child)
            answer_sizes[count] = store_profile(target)
            time.sleep(0.5)  # the other workers start once worker 0 serves
            services[count] = (child, target, _wait_workers(child, count))
        idle = {count: _memory(child.pid, pids) for count, (child, _, pids) in services.items()}
        if h2load is None:
            generators = [Child(f"load generator {i}", "bench.load", patience=1.0) for i in range(GENERATORS)]
            started += generators
            measure_one = _by_generators(generators, in_flight, seconds, warmup, answer_slack)
        else:
            measure_one = _by_h2load(h2load, directory, in_flight, seconds, warmup, answer_sizes)
        measured: list[dict[str, Any]] = []
        for round_ in range(rounds):
            for count in COUNTS[:: 1 if round_ % 2 == 0 else -1]:
                child, target, pids = services[count]
                row = measure_one(count, round_ + 1, child, target, pids)
                measured.append(row)
                starved = f"; {row['starved']} load generator(s) had no call end inside it" if row["starved"] else ""
                progress(
                    f"workers = {count}, round {round_ + 1}: {row['qps']:.0f} QPS, server {row['server_cpu']:.0%}"
                    f" + {load} {row['client_cpu']:.0%} of a core{starved}"
                )
        loaded = {count: _memory(child.pid, pids) for count, (child, _, pids) in services.items()}
    finally:
        for child in reversed(started):
            child.close()
        log.close()
    return {**_summary(measured, in_flight, idle, loaded), "load": load,
            "connections": _connections(in_flight)[0] if h2load else GENERATORS * CHANNELS}


MeasureOne = Callable[[int, int, Child, str, list[int]], dict[str, Any]]


def _by_generators(generators: list[Child], in_flight: int, seconds: float, warmup: float,
                   answer_slack: float) -> MeasureOne:
    """One window measured by the `bench.load` generators together."""
    per_generator = max(1, in_flight // GENERATORS)

    def measure_one(count: int, round_: int, child: Child, target: str, pids: list[int]) -> dict[str, Any]:
        command = Command(
            target=target, method=GETSMTP_PATH, payload_size=len(GETSMTP_REQUEST),
            in_flight=per_generator, seconds=seconds, warmup=warmup, server_pid=child.pid,
            extra_pids=tuple(pids), channels=CHANNELS, allow_empty=True,
        )
        for generator in generators:
            generator.send_line(json.dumps(asdict(command)))
        replies = [checked_reply(g.read_line(timeout=warmup + seconds + answer_slack), f"workers = {count}")
                   for g in generators]
        return _row(count, round_, replies)

    return measure_one


def _connections(in_flight: int) -> tuple[int, int]:
    """h2load's connections and calls in flight on each: as many connections as the Python
    generators open, `in_flight` calls over them (rounded down to a multiple of the connections)."""
    connections = min(in_flight, GENERATORS * CHANNELS)
    return connections, max(1, in_flight // connections)


def _by_h2load(h2load: str, directory: Path, in_flight: int, seconds: float, warmup: float,
               answer_sizes: dict[int, int]) -> MeasureOne:
    """One measurement by h2load: a warm-up run of about `warmup` seconds' worth of calls at the
    last rate seen, then the measured run of about `seconds` worth."""
    body = directory / "getsmtp.grpc"
    body.write_bytes(h2.frame(GETSMTP_REQUEST))
    connections, streams = _connections(in_flight)
    rate: dict[int, float] = {}

    def measure_one(count: int, round_: int, child: Child, target: str, pids: list[int]) -> dict[str, Any]:
        url = f"http://{target}{GETSMTP_PATH}"
        server_pids = (child.pid, *pids)

        def run(calls: int) -> dict[str, Any]:
            return h2.run(h2load, url, body, BENCH_TOKEN, calls=calls, connections=connections, streams=streams,
                          server_pids=server_pids, answer_size=answer_sizes[count], scratch=directory)

        warm = run(max(H2LOAD_MIN_CALLS, int(rate.get(count, 0.0) * warmup)))
        rate[count] = warm["qps"]
        done = run(max(H2LOAD_MIN_CALLS, int(warm["qps"] * seconds)))
        rate[count] = done["qps"]
        if done["server_cpu"] is None:
            raise BenchError(f"workers = {count}: the server's CPU could not be read from /proc")
        return {
            "workers": count, "round": round_, "qps": done["qps"], "p50_ms": done["p50_ms"],
            "p99_ms": done["p99_ms"], "starved": 0, "server_cpu": done["server_cpu"],
            "client_cpu": done["client_cpu"], "other_cpu": done["other_cpu"],
            "server_us_per_call": done["server_cpu"] / done["qps"] * 1e6,
            "client_us_per_call": done["client_cpu"] / done["qps"] * 1e6,
            # The supervisor's share first, then each worker's (one process: just its own).
            "process_cpu": done["process_cpu"],
        }

    return measure_one


def _memory(supervisor: int, workers: list[int]) -> dict[str, Any]:
    """VmRSS (MiB) of the serving processes: the supervisor's and each worker's, or the one process's."""
    def rss(pid: int) -> float | None:
        found = memory(pid)
        return None if found is None else found["rss_mib"]

    if not workers:
        return {"process": rss(supervisor)}
    return {"supervisor": rss(supervisor), "workers": [rss(pid) for pid in workers]}


def _row(count: int, round_: int, replies: list[dict[str, Any]]) -> dict[str, Any]:
    """One round of one service, from every load generator's reply. The QPS is theirs together;
    latencies are those of the generators with a call inside the window (see `Command.allow_empty`:
    a generator whose connections waited through the whole window counts as `starved`)."""
    served = [r for r in replies if r["calls"]]
    if not served:
        raise BenchError(f"workers = {count}: no call of any load generator ended inside the window")
    qps = sum(r["qps"] for r in replies)
    client = sum(r["client_cpu"] for r in replies)
    # Every generator read the same server processes over (almost) the same window.
    server = statistics.mean(r["server_cpu"] for r in replies if r["server_cpu"] is not None)
    others = [r["other_cpu"] for r in replies if r["other_cpu"] is not None]
    # A generator's "other" holds the other generators' CPU: take theirs out.
    other = None if not others else max(0.0, statistics.mean(others) - client * (len(replies) - 1) / len(replies))
    return {
        "workers": count, "round": round_, "qps": qps,
        "p50_ms": statistics.mean(r["p50_ms"] for r in served),
        "p99_ms": max(r["p99_ms"] for r in served),
        "starved": len(replies) - len(served),
        "server_cpu": server, "client_cpu": client, "other_cpu": other,
        "server_us_per_call": server / qps * 1e6, "client_us_per_call": client / qps * 1e6,
    }


def _summary(measured: list[dict[str, Any]], in_flight: int, idle: dict, loaded: dict) -> dict[str, Any]:
    by_round: dict[int, dict[int, dict[str, Any]]] = {}
    for row in measured:
        by_round.setdefault(row["round"], {})[row["workers"]] = row
    ratios = [r[2]["qps"] / r[1]["qps"] for r in by_round.values() if 1 in r and 2 in r]

    def median_of(count: int) -> dict[str, Any]:
        rows = [row for row in measured if row["workers"] == count]
        keys = ("qps", "p50_ms", "p99_ms", "server_cpu", "client_cpu", "server_us_per_call", "client_us_per_call")
        summary = {key: statistics.median(row[key] for row in rows) for key in keys}
        others = [row["other_cpu"] for row in rows if row["other_cpu"] is not None]
        summary["other_cpu"] = statistics.median(others) if others else None
        return summary

    return {
        "in_flight": in_flight, "generators": GENERATORS, "channels_per_generator": CHANNELS,
        "cpus": len(os.sched_getaffinity(0)),
        "workers_2": median_of(2), "workers_1": median_of(1), "rounds": measured,
        "ratio": statistics.median(ratios) if ratios else None,
        # Windows in which one load generator had no call end (the server served the other's).
        "starved_windows": sum(row["starved"] for row in measured),
        "memory_idle": {str(k): v for k, v in idle.items()}, "memory_after": {str(k): v for k, v in loaded.items()},
    }


if __name__ == "__main__":  # the phase on its own: python -m bench.workersphase [python|h2load [ROUNDS]]
    import tempfile

    from bench.report import _workers_table

    with tempfile.TemporaryDirectory(prefix="smtpconfig-bench-") as scratch:
        result = measure(Path(scratch), seconds=3.0, warmup=1.0, rounds=int(sys.argv[2]) if len(sys.argv) > 2 else 3,
                         in_flight=64, answer_slack=60.0,
                         progress=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True),
                         load=sys.argv[1] if len(sys.argv) > 1 else "python")
    print("\n".join(_workers_table(result)), file=sys.stderr)
    print(json.dumps(result, indent=2))
