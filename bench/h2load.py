"""Load from h2load, nghttp2's HTTP/2 load generator (written in C), for the workers phase.

The Python load generators (`bench.load`) cost 90-110 µs of CPU per call: on a 2-core machine they
take most of a core, which more server processes then cannot have. h2load sends the same gRPC
calls (a POST with `content-type: application/grpc`, the bearer token and the request in gRPC's
5-byte framing) at a few µs per call, so the workers phase measures the server rather than the
client.

h2load knows HTTP, not gRPC: a call the service refused still ends `200` with its status in the
trailers, and an empty body. Every run therefore sends a fixed number of calls and checks that
exactly that many answers of the expected size arrived (`check`): one refusal shows as missing
bytes and fails the run.

Debian ships h2load in the `nghttp2-client` package. It is not part of `make test`'s setup (like
perf for `bench.profile`); without it the workers phase falls back to the Python load generators.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.load import machine_cpu, percentile, processes_cpu

MISSING = "h2load is not installed (Debian: apt install nghttp2-client)"
# gRPC's message framing: a compression flag byte (0: not compressed), then the length (big-endian).
_FRAME_HEADER = 5

_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_DATA = re.compile(r"^traffic: .*?, [\d.]+\w* \((\d+)\) data", re.M)


def find() -> str | None:
    """The h2load program on PATH, or None."""
    return shutil.which("h2load")


def frame(message: bytes) -> bytes:
    """`message` as one gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def parse(output: str) -> dict[str, Any]:
    """What h2load printed on standard output: the run's seconds, its requests by outcome, the
    2xx answers and the bytes of answer bodies (gRPC frames) it received."""
    found = {name: pattern.search(output) for name, pattern in
             (("finished", _FINISHED), ("requests", _REQUESTS), ("status", _STATUS), ("data", _DATA))}
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise BenchError(f"h2load's report has no {', '.join(missing)} line: {output[-600:]!r}")
    finished, requests, status, data = (found[n] for n in ("finished", "requests", "status", "data"))
    seconds = float(finished.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[finished.group(2)]
    total, started, done, succeeded, failed, errored, timeout = (int(g) for g in requests.groups())
    return {
        "seconds": seconds, "total": total, "done": done, "succeeded": succeeded,
        "failed": failed, "errored": errored, "timeout": timeout,
        "status_2xx": int(status.group(1)), "data_bytes": int(data.group(1)),
    }


def check(report: dict[str, Any], calls: int, answer_size: int) -> None:
    """Raise BenchError unless each of `calls` calls got a 2xx answer carrying one message of
    `answer_size` bytes: h2load counts a refused gRPC call (an empty body) as a success."""
    expected = calls * (answer_size + _FRAME_HEADER)
    if report["done"] != calls or report["succeeded"] != calls or report["status_2xx"] != calls:
        raise BenchError(
            f"h2load: {report['succeeded']} of {calls} calls succeeded ({report['status_2xx']} with a 2xx status,"
            f" {report['failed']} failed, {report['errored']} errored, {report['timeout']} timed out)"
        )
    if report["data_bytes"] != expected:
        raise BenchError(
            f"h2load: the answers held {report['data_bytes']} bytes, not {expected} ({calls} answers of"
            f" {answer_size} bytes, each framed): some calls were refused or answered something else"
        )


def latencies_ms(log: str) -> list[float]:
    """Each call's time to its whole answer, in ms, from h2load's `--log-file` (tab-separated:
    start in µs since the epoch, HTTP status, µs to the end of the answer), ascending."""
    return sorted(int(line.split("\t")[2]) / 1000.0 for line in log.splitlines() if line.strip())


def run(
    h2load: str, url: str, body: Path, token: str, *, calls: int, connections: int, streams: int,
    server_pids: tuple[int, ...], answer_size: int, scratch: Path,
) -> dict[str, Any]:
    """Send `calls` calls to `url` (`connections` connections, `streams` calls in flight on each)
    and return what a `bench.load` reply holds for a window: QPS, p50 and p99 in ms, and CPU in
    cores over the run, the server's (`server_pids` together), h2load's and the rest of the
    machine's; `process_cpu` splits the server's by process."""
    log = scratch / "h2load-requests.tsv"
    argv = [
        h2load, "-n", str(calls), "-c", str(connections), "-m", str(streams), "-t", "1",
        "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"authorization: Bearer {token}",
        "--log-file", str(log), "-d", str(body), url,
    ]
    per0 = [processes_cpu((pid,)) for pid in server_pids]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine0, wall0 = machine_cpu(), time.perf_counter()
    try:
        finished = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish {calls} calls in 600 s") from None
    wall = time.perf_counter() - wall0
    machine1 = machine_cpu()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    per1 = [processes_cpu((pid,)) for pid in server_pids]
    if finished.returncode != 0:
        raise BenchError(f"h2load ended with {finished.returncode}: {(finished.stderr or finished.stdout)[-600:]}")
    report = parse(finished.stdout)
    check(report, calls, answer_size)
    latencies = latencies_ms(log.read_text())
    log.unlink()
    client = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime) / wall
    process_cpu = [None if a is None or b is None else (b - a) / wall for a, b in zip(per0, per1, strict=True)]
    server = None if None in process_cpu else sum(p for p in process_cpu if p is not None)
    other = None
    if server is not None and machine0 is not None and machine1 is not None:
        other = max(0.0, (machine1[0] - machine0[0]) / wall - client - server)
    return {
        "calls": calls, "qps": calls / report["seconds"],
        "p50_ms": percentile(latencies, 0.50) if latencies else 0.0,
        "p99_ms": percentile(latencies, 0.99) if latencies else 0.0,
        "client_cpu": client, "server_cpu": server, "other_cpu": other, "process_cpu": process_cpu,
    }


def available_or_raise() -> str:
    """h2load's path, or BenchError saying what to install."""
    found = find()
    if found is None:
        raise BenchError(MISSING)
    return found
