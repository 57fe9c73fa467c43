"""Our own Python per call, without grpcio: the service's handlers called in a tight loop.

    python -m bench.tightloop [--calls N] [--profile GetSmtp|ResolveSmtp|CheckSecret]
                              [--evict SIZE] [--event-loop uvloop|asyncio]

`make bench` and `make profile` measure calls through grpcio, where our Python runs between
grpcio's own work. This times the same Python alone. A real `App` (SQLite in a temporary
directory, the bench token, a `file` provider) is started and seeded through its API: the
ResolveSmtp profile of `make bench`, and a second `file` instance for CheckSecret. Then each
method's registered handler (`App.routes`, exactly what grpcio would call) is awaited `--calls`
times in a row, after a warm-up that fills the resolver's cache, with a stand-in for grpcio's
servicer context that hands over the request and takes the trailers. Everything of ours runs: the
guard (request id, token, permission, slot, deadline, metrics), the servicer, the audit record
(written to the audit log) and the answer's serialisation. What is left out is grpcio's part:
reading from and writing to the connection, its Cython around each call, and the event loop's
wake-ups.

It prints µs per call (wall and CPU) for GetSmtp, ResolveSmtp (warm) and CheckSecret (warm), and
for the echoes of `bench.stages` in the same shape: the audited echo (the least an audited call
costs: the token's hash looked up, one chained record written, a kept answer), and the floors of
`make bench`, the checks echo (`CheckedEcho`: every check of the guard, written inline) without a
record on GetSmtp's request and answer and with one on CheckSecret's. A method's time minus its
floor's is what its method (and its record) add, in our Python alone. With `--profile METHOD`,
also that method's functions by own time (cProfile, which slows every call).

In the server the same Python runs between grpcio's work, which leaves less of it in the CPU's
caches. `--evict SIZE` (bytes; K, M or G for KiB, MiB, GiB) writes one byte in every 64-byte line
of a buffer that large before each call, so each call starts with that much of the caches taken by
other data, and times each call alone: it prints the median and mean per call instead (wall, since
the call is all the process runs). Comparing these with the per-call CPU `make profile` puts under
"Python interpreter" shows how much of the gap colder caches explain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench import BENCH_TOKEN, procs
from bench.seed import (
    CHECKSECRET_PATH,
    GETSMTP_PATH,
    GETSMTP_REQUEST,
    RESOLVESMTP_PATH,
    RESOLVESMTP_REQUEST,
    SECRET_FILE,
    check_secret_request,
    create_provider,
    store_resolving_profile,
)

METHODS = {"GetSmtp": GETSMTP_PATH, "ResolveSmtp": RESOLVESMTP_PATH, "CheckSecret": CHECKSECRET_PATH}
FLOOR = "audited echo"
CHECKS = "checks echo (no record)"
CHECKS_RECORD = "checks+record echo"
WARM_UP = 500
# The cache line size of the x86-64 and arm64 CPUs this runs on: `--evict` writes one byte a line.
LINE = 64
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class Evictor:
    """Takes the CPU's caches from whatever ran before: a write to every cache line of a buffer of
    `size` bytes (one slice assignment, in C). Called with nothing to do when `size` is 0."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer = bytearray(size)
        self._fill = [bytes(len(range(0, size, LINE))), b"\x01" * len(range(0, size, LINE))]
        self._turn = 0

    def __call__(self) -> None:
        if self.size:
            # Alternate what is written, so that no line is left as it was.
            self._turn ^= 1
            self._buffer[::LINE] = self._fill[self._turn]


def parse_size(text: str) -> int:
    """`16M` -> 16 MiB in bytes; a plain number is bytes."""
    number, unit = text.strip().upper().rstrip("IB"), ""
    if number and number[-1] in UNITS:
        number, unit = number[:-1], number[-1]
    try:
        size = int(number) * UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 0, 8M or 16777216") from None
    if size < 0:
        raise argparse.ArgumentTypeError("a size cannot be negative")
    return size


class StandInContext:
    """What the guard and the servicers ask of grpcio's `ServicerContext` on a successful call:
    the caller's metadata (the bench token), one request message, no deadline, a peer."""

    __slots__ = ("_request", "_read", "trailers")

    METADATA = (("authorization", f"Bearer {BENCH_TOKEN}"),)

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._read = False
        self.trailers: tuple = ()

    def invocation_metadata(self) -> tuple:
        return self.METADATA

    async def read(self) -> Any:
        if self._read:
            return grpc.aio.EOF
        self._read = True
        return self._request

    def time_remaining(self) -> None:
        return None

    def set_trailing_metadata(self, metadata: tuple) -> None:
        self.trailers = metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict:
        return {}

    def done(self) -> bool:
        return False

    async def send_initial_metadata(self, metadata: tuple) -> None:
        return None

    async def abort(self, code, details: str = "", trailing_metadata: tuple = ()) -> None:
        # A refused call here is a broken setup, not a measurement.
        raise RuntimeError(f"the call was refused: {code.name}: {details}")


class _Details:
    """grpc.HandlerCallDetails as the server hands it to a generic handler."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = StandInContext.METADATA


async def measure(calls: int, profile: str | None, out, evict: int = 0) -> dict[str, dict[str, float]]:
    from bench.stages import AuditedEcho, CheckedEcho
    from smtpconfig.api.auth import token_hash
    from smtpconfig.app import App
    from smtpconfig.settings import Settings

    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="smtpconfig-tightloop-") as scratch:
        files = Path(scratch) / "files"
        files.mkdir()
        app = App(Settings(
            data_dir=Path(scratch) / "data", listen=("127.0.0.1:0",), unix_socket="", admin_token=False,
            tokens=(("bench", token_hash(BENCH_TOKEN)),), policy=(("bench", ("*",)),),
            resolve_rate=0.0, test_rate=0.0, file_directories=(files,),
        ))
        await app.start()
        try:
            target = f"127.0.0.1:{next(iter(app.ports.values()))}"
            # Seeded through the real API, as `make bench` seeds its apply service; the seeding
            # clients are synchronous, so they run beside the loop that serves them.
            await loop.run_in_executor(None, store_resolving_profile, target, files)
            # CheckSecret of a reference to another instance on the same files (warmed below).
            other = await loop.run_in_executor(
                None, create_provider, target, "tightloop-file", "file", {"Directory": str(files)}
            )
            check = check_secret_request(other, File=SECRET_FILE)
            requests = {"GetSmtp": GETSMTP_REQUEST, "ResolveSmtp": RESOLVESMTP_REQUEST, "CheckSecret": check}
            assert app.routes is not None
            evictor = Evictor(evict)
            results = {}
            for name, path in METHODS.items():
                handler = app.routes.service(_Details(path))
                if handler is None or handler.stream_unary is None:
                    raise RuntimeError(f"{path} is not served as the guard serves unary methods")
                results[name] = await _time(handler, requests[name], calls, evictor)
                if profile == name:
                    await _profile(handler, requests[name], calls, name, out)
            # The floor, sent CheckSecret's request and answering CheckSecret's answer.
            answer = await _call(app.routes.service(_Details(CHECKSECRET_PATH)), check)
            floor = AuditedEcho(answer, Path(scratch) / "floor.log").handler(client_streaming=True)
            results[FLOOR] = await _time(floor.service(_Details(CHECKSECRET_PATH)), check, calls, evictor)
            # The floors of `make bench`: GetSmtp's (no record) and CheckSecret's (with its record).
            profile_bytes = await _call(app.routes.service(_Details(GETSMTP_PATH)), GETSMTP_REQUEST)
            checks = CheckedEcho(profile_bytes, Path(scratch) / "checks.log", record=False).handler()
            results[CHECKS] = await _time(checks.service(_Details(GETSMTP_PATH)), GETSMTP_REQUEST, calls, evictor)
            recorded = CheckedEcho(answer, Path(scratch) / "checks-record.log").handler()
            results[CHECKS_RECORD] = await _time(recorded.service(_Details(CHECKSECRET_PATH)), check, calls, evictor)
            return results
        finally:
            await app.stop(0)


async def _call(handler: grpc.RpcMethodHandler, request: bytes) -> bytes:
    context = StandInContext(request)
    answer = await handler.stream_unary(None, context)
    if handler.response_serializer is not None:
        answer = handler.response_serializer(answer)
    if not answer:
        raise RuntimeError("the call answered nothing")
    return answer


async def _time(handler: grpc.RpcMethodHandler, request: bytes, calls: int, evictor: Evictor) -> dict[str, float]:
    for _ in range(WARM_UP):  # the first CheckSecret fills the resolver's cache
        await _call(handler, request)
    if not evictor.size:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await _call(handler, request)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"calls": calls, "wall_us": wall / calls * 1e6, "cpu_us": cpu / calls * 1e6}
    # Each call timed alone, after the eviction (which is not timed).
    took = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        evictor()
        start = clock()
        await _call(handler, request)
        took.append(clock() - start)
    return {"calls": calls, "median_us": statistics.median(took) / 1e3, "mean_us": statistics.fmean(took) / 1e3}


async def _profile(handler: grpc.RpcMethodHandler, request: bytes, calls: int, name: str, out) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await _call(handler, request)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    print(f"{name}: own time by function over {calls} calls (cProfile)", file=out)
    print(text.getvalue(), file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tightloop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per method (default 20000)")
    parser.add_argument("--profile", choices=tuple(METHODS), help="also print this method's functions by own time")
    parser.add_argument("--evict", type=parse_size, default=0, metavar="SIZE",
                        help="write this much memory (16M, 2M, bytes) before each call (default 0: none)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default=procs.event_loop,
                        help="the event loop to run on (default: serve's, uvloop where installed)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be 1 or more")
    from smtpconfig.core import aio

    results = aio.run(measure(args.calls, args.profile, sys.stdout, args.evict), args.event_loop)
    if not args.evict:
        print(f"Our Python per call, no grpcio ({args.calls} calls each, {args.event_loop}):")
        for name, result in results.items():
            print(f"  {name:<23} {result['wall_us']:6.1f} µs wall, {result['cpu_us']:6.1f} µs CPU")
        return 0
    print(f"Our Python per call, no grpcio, {_size(args.evict)} written before each call"
          f" ({args.calls} calls each, {args.event_loop}):")
    for name, result in results.items():
        print(f"  {name:<23} {result['median_us']:6.1f} µs median, {result['mean_us']:6.1f} µs mean")
    return 0


def _size(size: int) -> str:
    for unit in ("G", "M", "K"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} bytes"


if __name__ == "__main__":
    sys.exit(main())
