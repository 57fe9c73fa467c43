"""What each part of a warm call's handling costs inside the running server, and the least any
server in Python pays for the same call.

    python -m bench.stages [--method CheckSecret|ResolveSmtp|GetSmtp] [--in-flight 64]
                           [--seconds 3] [--warmup 1] [--rounds 6] [--json]

`make bench` gives the service's calls per second as a share of a bare grpc.aio echo's; `make
profile` says which code the extra CPU ran in. This says which part of the handling it belongs to,
by serving the method with parts of it left out, in the real server, under the same load:

  shape        the service's handler shape alone: a client-streaming handler that reads the one
               request message and returns the method's answer as it was (kept from a real call);
  guard        the guard (`Guard.run`: request id, token, permission, slot, rate limit, default
               deadline, metrics) around that kept answer, without an audit record;
  method       the guard and the real method (the servicer, the resolver's cache, the answer),
               without an audit record (audited methods only);
  service      the method as it is served: the above and, for audited methods, the audit record.

One service process serves every stage: between measurements the benchmark tells it which to use
(`bench.servers service --stages`, a line on its stdin), so every stage runs on the same heap,
store and caches. Three more servers show the least a server written in Python pays: an "audited
echo" (`bench.servers audited-echo`) that finds the caller by its token's SHA-256, appends one
hash-chained audit line of the service's format with write(2) and answers the service's own answer
bytes, once as a unary handler and once in the service's client-streaming shape; and the same
echo with every other check of the guard written inline in one coroutine (`CheckedEcho`: request
id, call context, permission, slots, default deadline, the request decoded, metrics), which is
what any server doing those checks pays before its method does anything. Bare grpc.aio (the echo
of `make bench`, sent as many bytes as the answer has) is the baseline.

Every target is driven in turn by the load generator of `make bench`, rounds alternating the order;
each row shows medians over rounds of: calls per second as a share of bare's in the same round,
server CPU per call (all threads), the event loop's share of it (where every call's Python runs),
and the load generator's CPU per call. Each service stage's "step" column is its server CPU per
call minus the stage before it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from bench import BARE_AIO, BENCH_TOKEN, ECHO_PATH, BenchError, procs, seed
from bench.load import Command
from bench.procs import Child
from bench.seed import METHOD_PATHS, seed_method
from bench.servers import AUDITED_ECHO, service_options

STAGES = ("shape", "guard", "method", "service")
# Target names: the baseline, the two audited echoes, then the service's stages.
BARE = "bare grpc.aio echo"
FLOOR_UNARY = "audited echo, unary"
FLOOR_STREAMING = "audited echo, client-streaming"
FLOOR_CHECKED = "audited echo, every check inline"
# Slack on top of warm-up + window before a silent load generator counts as hung.
ANSWER_SLACK = 60.0
SIZE_SLACK = 4


# --- in the service process: the stages ---------------------------------------------------------


def stage_handler(guarded, stage: str) -> grpc.RpcMethodHandler:
    """The handler serving `stage` of the method `guarded` (`smtpconfig.api.handlers.Guarded`)
    describes. The answer a stage keeps comes from the first call after the switch, served whole
    but for its audit record; the benchmark warms the method up before, so it is a warm answer."""
    quiet = dataclasses.replace(guarded.spec, audit=False)
    guard, name, decode = guarded.guard, guarded.name, guarded.decode
    kept: list[bytes] = []

    async def kept_answer(request, context: grpc.aio.ServicerContext) -> bytes:
        if not kept:
            kept.append(guarded.serialize(await guarded.method(request, context)))
        return kept[0]

    if stage == "shape":
        async def handle(_requests, context: grpc.aio.ServicerContext):
            if not kept:  # the method needs its call context: the guard sets it up
                return await guard.run(quiet, name, kept_answer, decode, context)
            await context.read()
            return kept[0]
    elif stage == "guard":
        async def handle(_requests, context: grpc.aio.ServicerContext):
            return await guard.run(quiet, name, kept_answer, decode, context)
    elif stage == "method":
        async def handle(_requests, context: grpc.aio.ServicerContext):
            return await guard.run(quiet, name, guarded.method, decode, context)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return grpc.stream_unary_rpc_method_handler(handle, request_deserializer=None,
                                                response_serializer=guarded.serialize)


class StageSwitch:
    """Serves each method of an `App` as the stage named last: `apply("guard", path)` from the
    next call on, `apply("service", path)` as it is served normally."""

    def __init__(self, routes) -> None:
        self._routes = routes
        self._normal: dict[str, grpc.RpcMethodHandler] = {}

    def apply(self, stage: str, path: str) -> None:
        guarded = self._routes.guarded(path)
        if guarded is None:
            raise ValueError(f"{path} is not a unary method of the service")
        if stage == "service":
            handler = self._normal.pop(path, None)
            if handler is not None:
                self._routes.replace(path, handler)
            return
        if stage == "method" and not guarded.spec.audit:
            raise ValueError(f"{path} is not audited: its method stage is the service itself")
        replaced = self._routes.replace(path, stage_handler(guarded, stage))
        self._normal.setdefault(path, replaced)


# --- the audited echo ---------------------------------------------------------------------------


class AuditedEcho:
    """What no server can skip for a warm audited call, and nothing else: the caller is found by
    its bearer token's SHA-256 among the known ones (else UNAUTHENTICATED), one audit line in the
    service's own format (`smtpconfig.ops.audit_file.record_line`, hash-chained) is appended with
    write(2) before the answer, and the answer is bytes given at start (the service's own)."""

    def __init__(self, answer: bytes, log: Path) -> None:
        from smtpconfig.ops.audit_file import GENESIS, Fields, record_line

        self._answer = answer
        self._tokens = {hashlib.sha256(BENCH_TOKEN.encode()).digest(): "bench"}
        self._fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._seq, self._prev = 0, GENESIS
        self._fields, self._line = Fields, record_line

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._record(context)
        return self._answer

    async def client_streaming(self, _requests, context: grpc.aio.ServicerContext) -> bytes:
        await context.read()
        await self._record(context)
        return self._answer

    async def _record(self, context: grpc.aio.ServicerContext) -> None:
        identity = None
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                identity = self._tokens.get(hashlib.sha256(value[7:].encode()).digest())
                break
        if identity is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")
        self._append(identity, "bench.Echo/Audited", f"r-{self._seq + 1:x}")

    def _append(self, identity: str, method: str, request_id: str) -> None:
        """Chain one record and append it with write(2)."""
        self._seq += 1
        line = self._line("bench", self._seq, self._fields(time.time_ns() // 1000, identity, method, request_id, "OK"),
                          self._prev)
        os.write(self._fd, line + b"\n")
        self._prev = hashlib.sha256(line).hexdigest()

    def handler(self, client_streaming: bool) -> grpc.GenericRpcHandler:
        """Every method path answered the same way, so it is sent the service's own calls."""
        method = (grpc.stream_unary_rpc_method_handler(self.client_streaming) if client_streaming
                  else grpc.unary_unary_rpc_method_handler(self.unary))

        class _Any(grpc.GenericRpcHandler):
            def service(self, handler_call_details):
                return method

        return _Any()


class CheckedEcho(AuditedEcho):
    """The audited echo (client-streaming) with every other check of the service's guard written
    inline, in one coroutine, with no layer or object of the service's: a request id (the caller's
    `x-request-id`, else a counter), the call's context variable, the permission, a slot among
    the calls in progress (in all and per identity), the default deadline while the message is read
    (a dict of tasks, as `smtpconfig.api.deadlines` keeps them), the message decoded as the method's
    request (else INVALID_ARGUMENT), and the call counted with its latency. What a server doing
    every check of an audited call costs before its method does anything, however it is written."""

    # The bench token's identity, and what each method measured needs.
    PERMISSIONS = {"bench": frozenset(("smtp:resolve", "smtp:read", "providers:read"))}
    NEEDS = {"ResolveSmtp": "smtp:resolve", "GetSmtp": "smtp:read", "CheckSecret": "providers:read"}
    MOST, MOST_PER_IDENTITY = 1000, 500
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(
        self, answer: bytes, log: Path, grants: dict[str, frozenset[str]] | None = None, record: bool = True,
    ) -> None:
        super().__init__(answer, log)
        self._grants = self.PERMISSIONS if grants is None else grants
        # Without the record: the checks of a call that is not audited (GetSmtp's floor).
        self._record_calls = record
        self._call = contextvars.ContextVar[str]("call")
        self._ids = itertools.count(1)
        self._in_progress = 0
        self._by: dict[str, int] = {}
        self._due: dict[asyncio.Task, float] = {}
        self._counts: dict[tuple[str, str], list] = {}

    async def _checked(
        self, path: str, permission: str, decode: Callable[[bytes], Any], _requests, context: grpc.aio.ServicerContext,
    ) -> bytes:
        started = time.perf_counter()
        request_id, identity = None, None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if isinstance(value, str) and value[:7].lower() == "bearer ":
                    identity = self._tokens.get(hashlib.sha256(value[7:].strip().encode()).digest())
            elif key == "x-request-id" and isinstance(value, str):
                request_id = value
        if request_id is None:
            request_id = f"echo-{next(self._ids):x}"
        token = self._call.set(request_id)
        code = "OK"
        try:
            if identity is None:
                code = "UNAUTHENTICATED"
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")
            if permission not in self._grants.get(identity, ()):
                code = "PERMISSION_DENIED"
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no permission")
            held = self._by.get(identity, 0)
            if self._in_progress >= self.MOST or held >= self.MOST_PER_IDENTITY:
                code = "RESOURCE_EXHAUSTED"
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
            self._in_progress += 1
            self._by[identity] = held + 1
            try:
                task = asyncio.current_task() if context.time_remaining() is None else None
                if task is not None:
                    self._due[task] = time.monotonic() + 30.0
                try:
                    message = await context.read()
                finally:
                    if task is not None:
                        self._due.pop(task, None)
                try:
                    decode(message)
                except DecodeError:
                    code = "INVALID_ARGUMENT"
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request could not be decoded")
                if self._record_calls:
                    self._append(identity, path, request_id)
                return self._answer
            finally:
                self._in_progress -= 1
                left = self._by[identity] - 1
                if left:
                    self._by[identity] = left
                else:
                    del self._by[identity]
        finally:
            self._call.reset(token)
            elapsed = time.perf_counter() - started
            series = self._counts.get((path, code))
            if series is None:
                series = self._counts[(path, code)] = [0] * (len(self.BUCKETS) + 1) + [0.0]
            series[bisect.bisect_left(self.BUCKETS, elapsed)] += 1
            series[-1] += elapsed

    def handler(self, client_streaming: bool = True) -> grpc.GenericRpcHandler:
        """Each method path served through `_checked`, with its request type and permission (the
        checked echo is client-streaming only, as the service is)."""
        from google.protobuf import descriptor_pool
        from google.protobuf.message_factory import GetMessageClass

        from smtpconfig.v2 import config_service_pb2, secret_provider_service_pb2  # noqa: F401 - into the pool

        pool = descriptor_pool.Default()
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        checked = self._checked

        class _ByPath(grpc.GenericRpcHandler):
            def service(self, handler_call_details):
                path = handler_call_details.method
                found = handlers.get(path)
                if found is None:
                    method = pool.FindMethodByName(path.strip("/").replace("/", "."))
                    found = handlers[path] = grpc.stream_unary_rpc_method_handler(functools.partial(
                        checked, path, CheckedEcho.NEEDS[method.name], GetMessageClass(method.input_type).FromString,
                    ))
                return found

        return _ByPath()


# --- the benchmark ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=tuple(METHOD_PATHS), default="CheckSecret")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="calls before each window, not counted")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default=procs.event_loop,
                        help="the event loop of every grpc.aio server (as `make bench`)")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.in_flight < 1 or args.seconds <= 0:
        parser.error("--rounds and --in-flight must be at least 1, --seconds positive")
    return args


def measure(args: argparse.Namespace, progress) -> dict[str, Any]:
    audited = args.method != "GetSmtp"
    stages = [stage for stage in STAGES if audited or stage != "method"]
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smtpconfig-bench-stages-")))
        secrets = scratch / "secrets"
        secrets.mkdir()
        service = stack.enter_context(Child("service", "bench.servers", "service", "--stages",
                                            "--file-directory", str(secrets)))
        service_target = f"127.0.0.1:{service.read_port()}"
        path, request, _ = seed_method(args.method, service_target, secrets)
        answer = seed.answer(service_target, path, request)  # what the echoes send
        (scratch / "answer").write_bytes(answer)
        options = json.dumps(service_options())
        servers = {
            BARE: stack.enter_context(Child(BARE, "bench.servers", BARE_AIO, "--options", options)),
            FLOOR_UNARY: stack.enter_context(Child(FLOOR_UNARY, "bench.servers", AUDITED_ECHO, "--options", options,
                                                   "--answer-file", str(scratch / "answer"))),
            FLOOR_STREAMING: stack.enter_context(Child(
                FLOOR_STREAMING, "bench.servers", AUDITED_ECHO, "--options", options, "--client-streaming",
                "--answer-file", str(scratch / "answer"))),
            FLOOR_CHECKED: stack.enter_context(Child(
                FLOOR_CHECKED, "bench.servers", AUDITED_ECHO, "--options", options, "--client-streaming", "--checks",
                "--answer-file", str(scratch / "answer"))),
        }
        targets = {name: f"127.0.0.1:{child.read_port()}" for name, child in servers.items()}
        client = stack.enter_context(Child("load generator", "bench.load", patience=1.0))
        names = [BARE, FLOOR_UNARY, FLOOR_STREAMING, FLOOR_CHECKED, *stages]

        def one(name: str, round_: int) -> dict[str, float]:
            if name in stages:
                service.send_line(f"stage {name} {path}")
                if service.read_line(timeout=10) != f"STAGE {name}":
                    raise BenchError(f"the service did not switch to stage {name}")
                server, target = service, service_target
            else:
                server, target = servers[name], targets[name]
            bare = name == BARE
            command = Command(
                target=target, method=ECHO_PATH if bare else path, in_flight=args.in_flight,
                payload_size=len(answer) if bare else len(request), seconds=args.seconds, warmup=args.warmup,
                server_pid=server.pid, request_b64="" if bare else b64encode(request).decode(),
            )
            client.send_line(json.dumps(asdict(command)))
            reply = procs.checked_reply(client.read_line(timeout=args.warmup + args.seconds + ANSWER_SLACK), name)
            if reply["server_cpu"] is None or reply["server_loop_cpu"] is None:
                raise BenchError("the server's CPU could not be read from /proc")
            # Durations in an answer are varints: the same answer a moment later may be a byte off.
            if not bare and abs(reply["response_size"] - len(answer)) > SIZE_SLACK:
                raise BenchError(f"{name} answered {reply['response_size']} bytes, not about {len(answer)}")
            qps = reply["qps"]
            progress(f"{name}, round {round_ + 1}: {qps:.0f} QPS")
            return {
                "qps": qps, "server_us_per_call": reply["server_cpu"] / qps * 1e6,
                "loop_us_per_call": reply["server_loop_cpu"] / qps * 1e6,
                "client_us_per_call": reply["client_cpu"] / qps * 1e6,
            }

        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in names[:: 1 if round_ % 2 == 0 else -1]:
                rounds[name].append(one(name, round_))
    summary = {}
    for name, runs in rounds.items():
        ratios = [run["qps"] / bare["qps"] for run, bare in zip(runs, rounds[BARE], strict=True)]
        summary[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        summary[name]["ratio"] = statistics.median(ratios)
        summary[name]["ratios"] = ratios
    return {
        "settings": {"method": args.method, "in_flight": args.in_flight, "seconds": args.seconds,
                     "warmup": args.warmup, "rounds": args.rounds, "event_loop": args.event_loop,
                     "answer_bytes": len(answer)},
        "targets": summary, "stages": stages,
    }


def render(result: dict[str, Any]) -> str:
    settings, targets = result["settings"], result["targets"]
    out = [
        f"{settings['method']} at {settings['in_flight']} in flight on {settings['event_loop']}"
        f" ({settings['answer_bytes']}-byte answers); medians of {settings['rounds']} rounds of"
        f" {settings['warmup']:g}+{settings['seconds']:g} s, CPU in µs per call", "",
        "| target | QPS / bare | server | step | event loop | load generator |", "|---|---|---|---|---|---|",
    ]
    before = None
    for name, row in targets.items():
        step = ""
        if name in result["stages"]:
            if before is not None:
                step = f"{row['server_us_per_call'] - before:+.0f}"
            before = row["server_us_per_call"]
            label = f"service: {name}"
        else:
            label = name
        out.append(f"| {label} | {row['ratio']:.2f} | {row['server_us_per_call']:.0f} | {step}"
                   f" | {row['loop_us_per_call']:.0f} | {row['client_us_per_call']:.0f} |")
    out += ["", "QPS / bare by round: " + "; ".join(
        f"{name}: {' '.join(f'{r:.2f}' for r in row['ratios'])}" for name, row in targets.items() if name != BARE)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return procs.run_tool("bench.stages", parse_args(argv), measure, render)


if __name__ == "__main__":
    sys.exit(main())
