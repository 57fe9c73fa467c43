"""The edge phase: ResolveSmtp through an edge on a Unix socket, with the central resolving from OpenBao.

The central is the plaintext service process (its GetSmtp measurements are over by then). It gets a
`vault` provider instance on the Vault phase's OpenBao and the profile whose RelayPassword references
`secret/bench/edge`. An edge process follows it (upstream: the central's TCP port, the bench token
as its upstream token) and serves a Unix socket; a bare-aio process serves another Unix socket. Once
the edge answers ResolveSmtp with the secret's value (warm: the edge's cache is filled), two things
are measured through the load generator, as the other rows are:

- throughput at `in_flight` (64 by default): the edge's ResolveSmtp against bare-aio echoing as many
  bytes, one after the other in each round, rounds alternating which goes first; the ratio is the
  median over rounds of edge QPS over bare-aio QPS;
- latency at 1 in flight: the edge's ResolveSmtp p50 in each round against the p50 of direct hvac
  reads of the same secret (one kept-alive `hvac.Client`, one read at a time, as many seconds as a
  window) taken right after it; the ratio is the median over rounds of edge p50 over direct p50.
  bare-aio on its Unix socket is measured at 1 in flight too, against the same direct reads
  (`bare_latency_ratio`): one grpcio round trip with nothing behind it, the floor of that ratio.

At `in_flight` a third server is measured in each round, the rounds rotating the order of the
three: the echo that checks and records (`bench.stages.CheckedEcho`) on a Unix socket of its own,
answering the edge's own warm answer. Its QPS over bare-aio's is the floor of the throughput ratio
(`floor_ratio`): every check the edge's guard makes and one chained audit line, with no method;
the edge's QPS over its (`to_floor`) is what the edge's method and record cost on top.

When the central's answer expires (its `cache_for`), the edge asks again during a window: that is
part of "warm" as an app sees it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import hvac
import requests
from hvac.exceptions import VaultError

from bench import AUTH, BENCH_TOKEN, ECHO_PATH, EDGE, FLOORS, LABELS, RESOLVE_SMTP, BenchError
from bench.load import Command, latency_stats, percentile
from bench.openbao import MOUNT, DevServer
from bench.procs import Child, checked_reply
from bench.seed import RESOLVESMTP_PATH, RESOLVESMTP_REQUEST, create_provider, store_with_password
from bench.servers import AUDITED_ECHO
from smtpconfig.v2 import config_service_pb2 as v2

SECRET = "bench/edge"
KEY = "password"
TIMEOUT = 10.0
READY_WITHIN = 20.0
BARE_LABEL = "bare-aio (Unix socket)"
EDGE_LABEL = "ResolveSmtp via edge (Unix socket)"
FLOOR = "floor"
FLOOR_LABEL = LABELS[FLOORS[RESOLVE_SMTP]]  # the checks+record echo


def measure(
    central: str, bao: DevServer, directory: Path, client: Child, options: tuple[str, ...],
    *, seconds: float, warmup: float, rounds: int, in_flight: int, answer_slack: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Seed the central, start the edge and its bare-aio twin, measure; both stop on every way out."""
    value = f"bench-edge-{time.time_ns()}"
    bao.write(SECRET, {KEY: value})
    provider = create_provider(central, "bench-edge-vault", "vault", {"Host": bao.address, "Token": bao.token})
    store_with_password(central, provider, {"Secret": SECRET, "Key": KEY})
    token_file = directory / "edge.token"
    token_file.write_text(BENCH_TOKEN + "\n")
    token_file.chmod(0o600)
    edge_socket, bare_socket, floor_socket = directory / "edge.sock", directory / "bare.sock", directory / "floor.sock"
    with ExitStack() as stack:
        edge = stack.enter_context(Child(
            "edge", "bench.servers", EDGE, "--upstream", central, "--upstream-token-file", str(token_file),
            "--unix", str(edge_socket)))
        bare = stack.enter_context(Child(
            BARE_LABEL, "bench.servers", "bare-aio", *options, "--unix", str(bare_socket)))
        edge.read_port()
        bare.read_port()
        kept = _warm(f"unix:{edge_socket}", value)
        size = len(kept)
        progress(f"edge phase: ResolveSmtp through the edge answers from OpenBao via the central, {size} bytes")
        answer_file = directory / "edge.answer"
        answer_file.write_bytes(kept)
        floor = stack.enter_context(Child(
            f"{FLOOR_LABEL} (Unix socket)", "bench.servers", AUDITED_ECHO, *options, "--client-streaming", "--checks",
            "--answer-file", str(answer_file), "--unix", str(floor_socket)))
        floor.read_port()
        targets = {EDGE: (f"unix:{edge_socket}", edge.pid), "bare": (f"unix:{bare_socket}", bare.pid),
                   FLOOR: (f"unix:{floor_socket}", floor.pid)}
        labels = {EDGE: EDGE_LABEL, "bare": BARE_LABEL, FLOOR: f"{FLOOR_LABEL} (Unix socket)"}

        def run(name: str, level: int) -> dict[str, Any]:
            target, pid = targets[name]
            echo = name == "bare"
            command = Command(
                target=target, method=ECHO_PATH if echo else RESOLVESMTP_PATH,
                payload_size=size if echo else len(RESOLVESMTP_REQUEST), in_flight=level,
                seconds=seconds, warmup=warmup, server_pid=pid, replies="ResolveSmtp" if name == EDGE else "",
            )
            client.send_line(json.dumps(asdict(command)))
            what = f"{labels[name]} at {level} in flight"
            reply = checked_reply(client.read_line(timeout=warmup + seconds + answer_slack), what)
            progress(f"edge phase: {what}: {reply['qps']:.0f} QPS, p50 {reply['p50_ms']:.3f} ms")
            return reply

        direct = hvac.Client(url=bao.address, token=bao.token, timeout=TIMEOUT)
        try:
            return _compare(run, direct, value, seconds, rounds, in_flight, size)
        except (requests.RequestException, VaultError) as error:
            raise BenchError(f"direct hvac read failed: {type(error).__name__}: {error}") from None
        finally:
            direct.adapter.close()


def _warm(target: str, value: str) -> bytes:
    """Call ResolveSmtp on the edge until it has followed the profile and returns the secret; then
    once more from its cache. Return that reply."""
    deadline = time.monotonic() + READY_WITHIN
    last = ""
    with grpc.insecure_channel(target) as channel:
        resolve = channel.unary_unary(RESOLVESMTP_PATH)
        while time.monotonic() < deadline:
            try:
                reply = v2.ResolveSmtpResponse.FromString(resolve(RESOLVESMTP_REQUEST, metadata=AUTH, timeout=TIMEOUT))
            except grpc.RpcError as error:
                last = f"{error.code().name}: {error.details()}"
                time.sleep(0.1)
                continue
            if reply.credentials.password == value:
                return resolve(RESOLVESMTP_REQUEST, metadata=AUTH, timeout=TIMEOUT)
            last = "a ResolveSmtp reply without the secret's value"
            time.sleep(0.1)
    raise BenchError(f"the edge did not resolve the OpenBao secret within {READY_WITHIN:.0f} s; last: {last}")


def _compare(run: Callable[[str, int], dict[str, Any]], direct: hvac.Client, value: str, seconds: float,
             rounds: int, in_flight: int, size: int) -> dict[str, Any]:
    def read() -> None:
        answer = direct.secrets.kv.v2.read_secret_version(path=SECRET, mount_point=MOUNT, raise_on_deleted_version=True)
        if answer["data"]["data"].get(KEY) != value:
            raise BenchError(f"the direct read of {SECRET} returned another value")

    read()  # connection up before timing
    perf = time.perf_counter
    per_round, direct_times = [], []
    edge_top, bare_top, floor_top, edge_one, bare_one = [], [], [], [], []
    three = (EDGE, "bare", FLOOR)
    for round_ in range(rounds):
        order = (EDGE, "bare") if round_ % 2 == 0 else ("bare", EDGE)
        top = {name: run(name, in_flight) for name in three[round_ % 3:] + three[:round_ % 3]}
        one = {name: run(name, 1) for name in order}
        times = []
        end = perf() + seconds
        while perf() < end:
            started = perf()
            read()
            times.append(perf() - started)
        direct_p50 = percentile(sorted(times), 0.50) * 1e3
        direct_times += times
        edge_top.append(top[EDGE])
        bare_top.append(top["bare"])
        floor_top.append(top[FLOOR])
        edge_one.append(one[EDGE])
        bare_one.append(one["bare"])
        per_round.append({
            "round": round_ + 1,
            "edge_qps": top[EDGE]["qps"], "bare_qps": top["bare"]["qps"],
            "qps_ratio": top[EDGE]["qps"] / top["bare"]["qps"],
            "floor_qps": top[FLOOR]["qps"], "floor_ratio": top[FLOOR]["qps"] / top["bare"]["qps"],
            "to_floor": top[EDGE]["qps"] / top[FLOOR]["qps"],
            "edge_p50_ms": one[EDGE]["p50_ms"], "bare_p50_ms": one["bare"]["p50_ms"], "direct_p50_ms": direct_p50,
            "latency_ratio": one[EDGE]["p50_ms"] / direct_p50,
            "bare_latency_ratio": one["bare"]["p50_ms"] / direct_p50,
        })

    def row(replies: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("qps", "p50_ms", "p99_ms", "server_cpu", "client_cpu", "other_cpu")
        return {key: statistics.median(r[key] for r in replies if r[key] is not None) for key in keys}

    return {
        "in_flight": in_flight,
        "response_bytes": size,
        "edge": row(edge_top),
        "bare_aio": row(bare_top),
        "qps_ratio": statistics.median(r["qps_ratio"] for r in per_round),
        "floor": row(floor_top),
        "floor_ratio": statistics.median(r["floor_ratio"] for r in per_round),
        "to_floor": statistics.median(r["to_floor"] for r in per_round),
        "edge_1": row(edge_one),
        "bare_aio_1": row(bare_one),
        "direct": latency_stats(direct_times),
        "latency_ratio": statistics.median(r["latency_ratio"] for r in per_round),
        "bare_latency_ratio": statistics.median(r["bare_latency_ratio"] for r in per_round),
        "rounds": per_round,
    }
