"""The Vault phase: a cold CheckSecret through the service against a direct hvac read, at 1 in flight.

An OpenBao dev server gets `secrets` distinct KV v2 secrets (`secret/bench/s<i>`, key `password`)
and the service a `vault` provider instance (Host, Token) created through CreateProvider. Then, one
call at a time, since latency is the point:

- direct: `read_secret_version` of secrets 0 .. N/2-1 from this process, with one fresh
  `hvac.Client` reused across calls (kept-alive connection, as the provider's own client);
- service: CheckSecret of secrets N/2 .. N-1, raw bytes over one channel. Each names a secret not
  read before, so each is a cache miss: validation, the resolver, its thread pool, the provider's
  hvac read, the fingerprint. Every reply must say `Cached` false.

Both paths are warmed up first on a secret of their own (connections, the provider object). Calls
alternate direct/service within a round, and rounds alternate which goes first, so drift on the
machine hits both alike. The ratio is the median over rounds of the round's service p50 over its
direct p50; latencies are reported over all calls.
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

from bench import BenchError, authorized_channel
from bench.load import latency_stats, percentile
from bench.openbao import MOUNT, DevServer
from bench.seed import CHECKSECRET_PATH, check_secret_request, create_provider
from smtpconfig.v2.secret_provider_service_pb2 import CheckSecretResponse

KEY = "password"
WARMUP = "bench/warmup"
TIMEOUT = 10.0


def _path(i: int) -> str:
    return f"bench/s{i}"


def measure(target: str, bao: DevServer, secrets: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Seed the OpenBao dev server `bao` and the service, compare."""
    half = secrets // 2
    if half < rounds:
        raise BenchError(f"--vault-secrets {secrets} is too few for {rounds} rounds: give at least {2 * rounds}")
    tag = random.token_hex(4)
    values = [f"bench-vault-{i}-{tag}" for i in range(2 * half)]
    started = time.monotonic()
    for i, value in enumerate(values):
        bao.write(_path(i), {KEY: value})
    bao.write(WARMUP, {KEY: "warm-up"})
    progress(f"OpenBao at {bao.address}: wrote {len(values)} secrets in {time.monotonic() - started:.1f} s")
    provider = create_provider(target, "bench-vault", "vault", {"Host": bao.address, "Token": bao.token})
    direct = hvac.Client(url=bao.address, token=bao.token, timeout=TIMEOUT)
    try:
        with authorized_channel(target) as channel:
            return _compare(direct, channel.unary_unary(CHECKSECRET_PATH), provider, values, rounds)
    except grpc.RpcError as error:
        raise BenchError(f"cold CheckSecret failed: {error.code().name}: {error.details()}") from None
    except (requests.RequestException, VaultError) as error:
        raise BenchError(f"direct hvac read failed: {type(error).__name__}: {error}") from None
    finally:
        direct.adapter.close()


def _compare(direct: hvac.Client, check, provider: int, values: list[str], rounds: int) -> dict[str, Any]:
    half = len(values) // 2

    def read(path: str) -> dict:
        return direct.secrets.kv.v2.read_secret_version(path=path, mount_point=MOUNT, raise_on_deleted_version=True)

    read(WARMUP)
    check(check_secret_request(provider, Secret=WARMUP, Key=KEY), timeout=TIMEOUT)
    cold_requests = [check_secret_request(provider, Secret=_path(i), Key=KEY) for i in range(half, 2 * half)]

    perf = time.perf_counter
    times: dict[str, list[list[float]]] = {"direct": [], "service": []}
    answers, replies = [], []
    for round_ in range(rounds):
        times["direct"].append([])
        times["service"].append([])
        for k in range(round_ * half // rounds, (round_ + 1) * half // rounds):
            for side in ("direct", "service") if round_ % 2 == 0 else ("service", "direct"):
                started = perf()
                if side == "direct":
                    answers.append((k, read(_path(k))))
                else:
                    replies.append((k, check(cold_requests[k], timeout=TIMEOUT)))
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

    per_round = [
        {
            "round": r + 1,
            "direct_p50_ms": percentile(sorted(d), 0.50) * 1e3,
            "service_p50_ms": percentile(sorted(s), 0.50) * 1e3,
        }
        for r, (d, s) in enumerate(zip(times["direct"], times["service"], strict=True))
    ]
    for r in per_round:
        r["ratio"] = r["service_p50_ms"] / r["direct_p50_ms"]
    return {
        "secrets": 2 * half,
        "direct": latency_stats([x for chunk in times["direct"] for x in chunk]),
        "service": {
            **latency_stats([x for chunk in times["service"] for x in chunk]),
            "cached": sum(reply.cached for _, reply in parsed),
            # The reply's own Latency: the resolver's time in the service (thread pool and hvac).
            "resolve_p50_ms": percentile(sorted(r.latency.ToNanoseconds() / 1e6 for _, r in parsed), 0.50),
        },
        "ratio_service_to_direct": statistics.median(r["ratio"] for r in per_round),
        "rounds": per_round,
    }
