"""The load generator: one asyncio process that drives every target in turn.

    python -m bench.load      (commands on stdin, results on stdout, one JSON object a line)

Why one process for all targets: the client's own cost then is the same for each of them, so a
difference in the numbers is a difference between the servers. Calls go through
`channel.unary_unary(path, request_serializer=None, response_deserializer=None)` with raw bytes, so
the client never (de)serializes protobuf, not even for the service. Each measurement opens a fresh
channel (one HTTP/2 connection; over TLS or mTLS when the command says so, the handshake done
before any call is timed) and keeps `in_flight` coroutines each issuing calls back to back.
For CheckSecret and ResolveSmtp (`replies`) the replies of counted calls are kept as bytes and
only parsed after the window: to check them, report their size range and, for CheckSecret, count
how many came from the service's cache. While the calls run, the server's resident memory is read
from /proc every RSS_INTERVAL seconds and its highest value reported.

Why a process apart from the servers: a client sharing a process with a server would compete with
it for the GIL and the event loop. With 2 cores, client and server then get about one core each;
the CPU columns of the report show which of them was the limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import grpc

from bench import Transport

CONNECT_TIMEOUT = 10.0
# How often the server's resident memory is sampled during a measurement: a /proc read, a few
# microseconds, twenty times a second costs the client nothing measurable.
RSS_INTERVAL = 0.05
MIB = 1024 * 1024


@dataclass(frozen=True)
class Command:
    """One measurement, as the parent asks for it."""

    target: str  # host:port
    method: str  # full method path, /package.Service/Method
    payload_size: int  # request bytes per call
    in_flight: int  # calls outstanding at any moment
    seconds: float  # measured window
    warmup: float  # calls before the window, not counted
    server_pid: int | None = None  # to read the server's CPU time from /proc
    waiting: int = 0  # extra calls to `wait_method` kept in flight meanwhile, not counted
    wait_method: str = ""
    request_b64: str = ""  # the request bytes, base64; empty: `payload_size` bytes of "x"
    replies: str = ""  # "CheckSecret" or "ResolveSmtp": parse the counted replies (see _check_replies)
    # The transport (bench.Transport): "" plaintext, "tls" or "mtls", the CA to trust and, for
    # mTLS, the client certificate and key (PEM file paths).
    tls: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # More processes whose CPU counts as the server's (a supervisor's workers), and connections
    # to spread the calls over (each its own, so SO_REUSEPORT can give them to different workers).
    extra_pids: tuple[int, ...] = ()
    channels: int = 1
    # Another load generator drives the same server at once (the workers phase). A server that
    # serves some connections ahead of others can then leave this generator's calls waiting
    # through a short window while it serves the other's: such a window is reported with no
    # calls (`calls` 0, latencies None) rather than as an error, as long as its calls did end.
    allow_empty: bool = False

    @property
    def transport(self) -> Transport:
        return Transport(self.tls, self.ca_file, self.cert_file, self.key_file)


@dataclass(frozen=True)
class Result:
    calls: int  # completed inside the window
    qps: float
    # None only when no call ended inside the window of an `allow_empty` command.
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    errors: int  # failed calls, warm-up included; any makes the measurement invalid
    first_error: str | None
    response_size: int  # bytes of the first response, to check both kinds of target match
    client_cpu: float  # CPU seconds per wall second of this process in the window (1.0 = a core)
    server_cpu: float | None  # the same for the server process; None without /proc
    # The same for the server's main thread alone: the event loop of a grpc.aio server (bare-aio
    # and the service), where every call's Python runs; the rest is grpcio's own threads.
    server_loop_cpu: float | None
    other_cpu: float | None  # cores busy on this machine besides client and server: noise
    # With `replies` only: their size range (Durations in the reply are varints, so its size moves
    # by a few bytes) and, for CheckSecret, how many counted replies said `Cached`.
    cached: int | None = None
    response_min: int | None = None
    response_max: int | None = None
    # The server's highest VmRSS sampled from the first call (warm-up included) to the window's end.
    server_rss_max_mib: float | None = None


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system, all threads) another process has used so far."""
    return None if pid is None else _stat_cpu(f"/proc/{pid}/stat")


def _thread_cpu(pid: int | None) -> float | None:
    """CPU seconds the main thread of another process has used so far."""
    return None if pid is None else _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _stat_cpu(path: str) -> float | None:
    """User + system CPU seconds from a /proc stat file; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu(pids: tuple[int | None, ...]) -> float | None:
    """CPU seconds of all `pids` together; None if one cannot be read."""
    total = 0.0
    for pid in pids:
        used = _process_cpu(pid)
        if used is None:
            return None
        total += used
    return total


def memory(pid: int | None) -> dict[str, float] | None:
    """A process's resident memory now (VmRSS) and at its highest so far (VmHWM), in MiB, from
    /proc/<pid>/status; None without it."""
    if pid is None:
        return None
    found = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key in (b"VmRSS", b"VmHWM"):
                    found[key.decode()] = int(value.split()[0]) * 1024 / MIB  # the kernel says kB: KiB
    except (OSError, ValueError, IndexError):
        return None
    if len(found) != 2:
        return None
    return {"rss_mib": round(found["VmRSS"], 2), "hwm_mib": round(found["VmHWM"], 2)}


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat's summary line."""
    try:
        with open("/proc/stat", "rb") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def latency_stats(latencies: list[float]) -> dict[str, float]:
    """calls, p50, p99 and mean (milliseconds) of latencies in seconds."""
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "mean_ms": sum(ordered) / len(ordered) * 1e3,
    }


def _check_replies(kind: str, replies: list[bytes]) -> dict[str, int | None]:
    """Parsed after the window, so the parsing costs the measurement nothing."""
    sizes = [len(r) for r in replies]
    found = {"cached": None, "response_min": min(sizes), "response_max": max(sizes)}
    if kind == "CheckSecret":
        from smtpconfig.v2.secret_provider_service_pb2 import CheckSecretResponse

        found["cached"] = sum(CheckSecretResponse.FromString(r).cached for r in replies)
    elif kind == "ResolveSmtp":
        from smtpconfig.v2.config_service_pb2 import ResolveSmtpResponse

        # No Cached field in these replies; each must at least carry both credentials.
        for raw in replies:
            credentials = ResolveSmtpResponse.FromString(raw).credentials
            if not (credentials.username and credentials.password):
                raise RuntimeError("a ResolveSmtp reply came without username and password")
    else:
        raise ValueError(f"unknown reply kind {kind!r}")
    return found


async def measure(command: Command) -> Result:
    payload = base64.b64decode(command.request_b64) if command.request_b64 else b"x" * command.payload_size
    transport = command.transport
    metadata = transport.metadata
    credentials = transport.credentials()
    # Several channels: each with a subchannel pool of its own, or they would share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)] if command.channels > 1 else None
    if credentials is None:
        opened = [grpc.aio.insecure_channel(command.target, options=options) for _ in range(max(1, command.channels))]
    else:
        opened = [grpc.aio.secure_channel(command.target, credentials, options=options)
                  for _ in range(max(1, command.channels))]
    channel = opened[0]
    async with contextlib.AsyncExitStack() as stack:
        for each in opened:
            await stack.enter_async_context(each)
        calls = [each.unary_unary(command.method, request_serializer=None, response_deserializer=None)
                 for each in opened]
        call = calls[0]
        for each, its_call in zip(opened, calls, strict=True):
            await asyncio.wait_for(each.channel_ready(), CONNECT_TIMEOUT)
            response_size = len(await its_call(payload, timeout=CONNECT_TIMEOUT, metadata=metadata))

        perf = time.perf_counter
        window_start = perf() + command.warmup
        window_end = window_start + command.seconds
        errors = 0
        first_error: str | None = None
        # For the error when no call lands inside the window: a stall, or calls slower than it.
        finished_calls, slowest = 0, 0.0

        replies: list[bytes] | None = [] if command.replies else None

        async def caller(latencies: list[float], call=call) -> None:
            nonlocal errors, first_error, finished_calls, slowest
            while True:
                started = perf()
                if started >= window_end:
                    return
                try:
                    reply = await call(payload, metadata=metadata)
                except grpc.RpcError as error:
                    errors += 1
                    first_error = first_error or f"{error.code().name}: {error.details()}"
                    continue
                finished = perf()
                finished_calls += 1
                slowest = max(slowest, finished - started)
                # Only calls wholly inside the window count, so QPS = count / window.
                if started >= window_start and finished <= window_end:
                    latencies.append(finished - started)
                    if replies is not None:
                        replies.append(reply)

        async def cpu_sampler() -> tuple[float, float | None, float | None, float | None]:
            pids = (command.server_pid, *command.extra_pids)
            # One process's main thread; with several server processes it would name one of them.
            main = command.server_pid if not command.extra_pids else None
            await asyncio.sleep(max(0.0, window_start - perf()))
            wall0, client0, server0, machine0 = perf(), time.process_time(), processes_cpu(pids), machine_cpu()
            loop0 = _thread_cpu(main)
            await asyncio.sleep(max(0.0, window_end - perf()))
            wall1, client1, server1, machine1 = perf(), time.process_time(), processes_cpu(pids), machine_cpu()
            loop1 = _thread_cpu(main)
            wall = wall1 - wall0
            client = (client1 - client0) / wall
            server = None if server0 is None or server1 is None else (server1 - server0) / wall
            loop = None if loop0 is None or loop1 is None else (loop1 - loop0) / wall
            other = None
            if server is not None and machine0 is not None and machine1 is not None:
                # /proc/stat counts all CPUs; busy time scaled to wall seconds is in cores.
                other = max(0.0, (machine1[0] - machine0[0]) / wall - client - server)
            return client, server, other, loop

        async def waiter() -> None:
            wait = channel.unary_unary(command.wait_method, request_serializer=None, response_deserializer=None)
            while perf() < window_end:
                await wait(payload, metadata=metadata)

        async def rss_sampler() -> float | None:
            highest = None
            while True:
                found = memory(command.server_pid)
                if found is not None and (highest is None or found["rss_mib"] > highest):
                    highest = found["rss_mib"]
                if perf() >= window_end:
                    return highest
                await asyncio.sleep(min(RSS_INTERVAL, max(0.0, window_end - perf())))

        per_caller: list[list[float]] = [[] for _ in range(command.in_flight)]
        cpu, rss, *_ = await asyncio.gather(
            cpu_sampler(),
            rss_sampler(),
            *(caller(out, calls[i % len(calls)]) for i, out in enumerate(per_caller)),
            *(waiter() for _ in range(command.waiting)),
        )

    latencies = sorted(x for out in per_caller for x in out)
    if not latencies and not (command.allow_empty and finished_calls):
        raise RuntimeError(
            f"no call completed inside the window ({errors} errors; {first_error});"
            f" {finished_calls} calls ended from the first call on, the slowest after {slowest:.3f} s"
        )
    return Result(
        calls=len(latencies),
        qps=len(latencies) / command.seconds,
        p50_ms=percentile(latencies, 0.50) * 1e3 if latencies else None,
        p99_ms=percentile(latencies, 0.99) * 1e3 if latencies else None,
        mean_ms=sum(latencies) / len(latencies) * 1e3 if latencies else None,
        errors=errors,
        first_error=first_error,
        response_size=response_size,
        client_cpu=cpu[0],
        server_cpu=cpu[1],
        other_cpu=cpu[2],
        server_loop_cpu=cpu[3],
        server_rss_max_mib=rss,
        **(_check_replies(command.replies, replies) if replies else {}),
    )


async def serve_commands() -> None:
    """Answer each command line with a result line until stdin closes. One event loop for the
    whole process: grpc.aio binds to the loop it first runs on."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            result = {"ok": True, **asdict(await measure(Command(**json.loads(line))))}
        except Exception as error:  # reported to the parent, which stops the run
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        try:
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the parent is gone: nobody wants the result
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return


def main() -> int:
    asyncio.run(serve_commands())
    return 0


if __name__ == "__main__":
    sys.exit(main())
