"""The Vault phase, at 1 in flight: a cold CheckSecret through the service against a bare echo round
trip plus a direct hvac read, and a warm ResolveSmtp of a Vault-backed profile against the same reads.

An OpenBao dev server gets `secrets` distinct KV v2 secrets (`secret/bench/s<i>`, key `password`)
and one more (`secret/bench/resolve`); the service gets a `vault` provider instance (Host, Token)
created through CreateProvider, and a stored profile whose RelayPassword references
`secret/bench/resolve` through it (the plaintext service: its GetSmtp rows are measured by then; the
edge phase stores its own profile there afterwards). Then, one call at a time, since latency is the
point, four paths take turns:

- direct: `read_secret_version` of secrets 0 .. N/2-1 from this process, with one fresh
  `hvac.Client` reused across calls (kept-alive connection, as the provider's own client);
- echo: bare-aio (the process the throughput rows use) echoing as many bytes as a cold CheckSecret
  reply holds, over a channel of its own with the bench token: the gRPC round trip with nothing
  behind it, from the same client as the two service paths;
- service: CheckSecret of secrets N/2 .. N-1, raw bytes over one channel. Each names a secret not
  read before, so each is a cache miss: validation, the resolver, its thread pool, the provider's
  hvac read, the fingerprint. Every reply must say `Cached` false;
- resolve: ResolveSmtp of the stored profile over that channel, warm (the password comes from the
  resolver's cache; Vault's default TTL is 300 s, longer than the phase). Every reply must carry
  the secret's value.

All paths are warmed up first (connections, the provider object, the resolve secret's cache entry).
Within a round the four paths take turns call by call, and each round rotates which goes first, so
drift on the machine hits them alike. Per round: the cold ratio is the service's p50 over the sum
of the echo's p50 and the direct read's p50 (the service can at best do both: one gRPC round trip
and one Vault read); the warm ratio is the ResolveSmtp p50 over the direct read's p50. Each ratio
reported is the median of its rounds'; latencies are reported over all calls.
"""

from __future__ import annotations

import secrets as random
import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc
import hvac
import requests
from hvac.exceptions import VaultError

from bench import ECHO_PATH, BenchError, authorized_channel
from bench.load import latency_stats, percentile
from bench.openbao import MOUNT, DevServer
from bench.seed import (
    CHECKSECRET_PATH,
    RESOLVESMTP_PATH,
    RESOLVESMTP_REQUEST,
    check_secret_request,
    create_provider,
    store_with_password,
)
from smtpconfig.v2.config_service_pb2 import ResolveSmtpResponse
from smtpconfig.v2.secret_provider_service_pb2 import CheckSecretResponse

KEY = "password"
WARMUP = "bench/warmup"
RESOLVED = "bench/resolve"
TIMEOUT = 10.0
SIDES = ("direct", "echo", "service", "resolve")


def _path(i: int) -> str:
    return f"bench/s{i}"


def measure(target: str, echo_target: str, bao: DevServer, secrets: int, rounds: int,
            progress: Callable[[str], None]) -> dict[str, Any]:
    """Seed the OpenBao dev server `bao` and the service at `target`, compare (bare-aio at `echo_target`)."""
    half = secrets // 2
    if half < rounds:
        raise BenchError(f"--vault-secrets {secrets} is too few for {rounds} rounds: give at least {2 * rounds}")
    tag = random.token_hex(4)
    values = [f"bench-vault-{i}-{tag}" for i in range(2 * half)]
    started = time.monotonic()
    for i, value in enumerate(values):
        bao.write(_path(i), {KEY: value})
    bao.write(WARMUP, {KEY: "warm-up"})
    resolved = f"bench-vault-resolve-{tag}"
    bao.write(RESOLVED, {KEY: resolved})
    progress(f"OpenBao at {bao.address}: wrote {len(values) + 2} secrets in {time.monotonic() - started:.1f} s")
    provider = create_provider(target, "bench-vault", "vault", {"Host": bao.address, "Token": bao.token})
    store_with_password(target, provider, {"Secret": RESOLVED, "Key": KEY})
    direct = hvac.Client(url=bao.address, token=bao.token, timeout=TIMEOUT)
    try:
        with authorized_channel(target) as channel, authorized_channel(echo_target) as echo_channel:
            calls = {
                "check": channel.unary_unary(CHECKSECRET_PATH),
                "resolve": channel.unary_unary(RESOLVESMTP_PATH),
                "echo": echo_channel.unary_unary(ECHO_PATH),
            }
            return _compare(direct, calls, provider, values, resolved, rounds)
    except grpc.RpcError as error:
        raise BenchError(f"the Vault phase's gRPC call failed: {error.code().name}: {error.details()}") from None
    except (requests.RequestException, VaultError) as error:
        raise BenchError(f"direct hvac read failed: {type(error).__name__}: {error}") from None
    finally:
        direct.adapter.close()


def _compare(direct: hvac.Client, calls: dict[str, Any], provider: int, values: list[str], resolved: str,
             rounds: int) -> dict[str, Any]:
    half = len(values) // 2
    check, resolve, echo = calls["check"], calls["resolve"], calls["echo"]

    def read(path: str) -> dict:
        return direct.secrets.kv.v2.read_secret_version(path=path, mount_point=MOUNT, raise_on_deleted_version=True)

    read(WARMUP)
    size = len(check(check_secret_request(provider, Secret=WARMUP, Key=KEY), timeout=TIMEOUT))
    payload = b"x" * size  # as many bytes as a cold CheckSecret reply, both ways
    if echo(payload, timeout=TIMEOUT) != payload:
        raise BenchError("bare-aio did not echo the Vault phase's payload")
    resolve(RESOLVESMTP_REQUEST, timeout=TIMEOUT)  # reads Vault once: the cache entry the counted calls hit
    resolve_size = len(resolve(RESOLVESMTP_REQUEST, timeout=TIMEOUT))
    cold_requests = [check_secret_request(provider, Secret=_path(i), Key=KEY) for i in range(half, 2 * half)]

    perf = time.perf_counter
    times: dict[str, list[list[float]]] = {side: [] for side in SIDES}
    answers, replies, resolutions = [], [], []
    for round_ in range(rounds):
        for side in SIDES:
            times[side].append([])
        order = SIDES[round_ % len(SIDES):] + SIDES[: round_ % len(SIDES)]
        for k in range(round_ * half // rounds, (round_ + 1) * half // rounds):
            for side in order:
                started = perf()
                if side == "direct":
                    answers.append((k, read(_path(k))))
                elif side == "echo":
                    echo(payload, timeout=TIMEOUT)
                elif side == "service":
                    replies.append((k, check(cold_requests[k], timeout=TIMEOUT)))
                else:
                    resolutions.append(resolve(RESOLVESMTP_REQUEST, timeout=TIMEOUT))
                times[side][round_].append(perf() - started)

    for k, answer in answers:
        if answer["data"]["data"].get(KEY) != values[k]:
            raise BenchError(f"the direct read of {_path(k)} returned another value")
    parsed = [(k, CheckSecretResponse.FromString(raw)) for k, raw in replies]
    for k, reply in parsed:
        if not reply.success or reply.provider_type != "vault" or reply.cached:
            raise BenchError(f"CheckSecret of {_path(half + k)} was not a cold Vault read: {reply}")
    if len({reply.fingerprint for _, reply in parsed}) != len(parsed):
        raise BenchError("CheckSecret gave equal fingerprints for different secrets")
    if any(ResolveSmtpResponse.FromString(raw).credentials.password != resolved for raw in resolutions):
        raise BenchError(f"a ResolveSmtp reply did not carry the value of {RESOLVED}")

    def p50(chunk: list[float]) -> float:
        return percentile(sorted(chunk), 0.50) * 1e3

    per_round = []
    for r in range(rounds):
        row: dict[str, Any] = {"round": r + 1, **{f"{side}_p50_ms": p50(times[side][r]) for side in SIDES}}
        row["ratio"] = row["service_p50_ms"] / row["direct_p50_ms"]
        row["ratio_to_echo_and_direct"] = row["service_p50_ms"] / (row["echo_p50_ms"] + row["direct_p50_ms"])
        row["resolve_ratio"] = row["resolve_p50_ms"] / row["direct_p50_ms"]
        row["echo_ratio"] = row["echo_p50_ms"] / row["direct_p50_ms"]  # a grpcio round trip alone
        per_round.append(row)

    def overall(side: str) -> dict[str, float]:
        return latency_stats([x for chunk in times[side] for x in chunk])

    return {
        "secrets": 2 * half,
        "direct": overall("direct"),
        "echo": {**overall("echo"), "bytes": size},
        "service": {
            **overall("service"),
            "cached": sum(reply.cached for _, reply in parsed),
            # The reply's own Latency: the resolver's time in the service, the provider's read included.
            "resolve_p50_ms": percentile(sorted(r.latency.ToNanoseconds() / 1e6 for _, r in parsed), 0.50),
        },
        "resolve_smtp": {**overall("resolve"), "bytes": resolve_size},
        "ratio_service_to_direct": statistics.median(r["ratio"] for r in per_round),
        "ratio_service_to_echo_and_direct": statistics.median(r["ratio_to_echo_and_direct"] for r in per_round),
        "ratio_resolve_to_direct": statistics.median(r["resolve_ratio"] for r in per_round),
        "ratio_echo_to_direct": statistics.median(r["echo_ratio"] for r in per_round),
        "rounds": per_round,
    }
