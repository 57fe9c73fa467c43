"""`smtpconfig.ops.metrics` for real: counters in a private registry, the text exposition parsed back, the
HTTP endpoint scraped over loopback, and the resolver and token client moving the counters while
they call the real `exec` provider and a real token endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from smtpconfig.core.secret import Secret
from smtpconfig.domain.crypto import Sealer
from smtpconfig.domain.model import InlineSecret, ProviderRef
from smtpconfig.domain.provider_service import ProviderService, declared_instances
from smtpconfig.domain.resolver import Resolver
from smtpconfig.ops.logs import forget_secrets, redact
from smtpconfig.ops.metrics import MAX_SERIES, NO_METRICS, OTHER, Metrics
from smtpconfig.outbound.oauth import TokenClient, TokenError, TokenRequest
from smtpconfig.plugin.manager import load_plugins
from smtpconfig.store.sqlite import SqliteStore
from tests.kits.oauthkit import TokenEndpoint

# Only loopback: a proxy from the environment must not see (or answer) the scrape.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist yet."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_method_moves_its_instruments() -> None:
    m = Metrics()
    m.rpc("v2.ConfigService/GetSmtp", "OK", 0.002)
    m.rpc("v2.ConfigService/GetSmtp", "OK", 0.004)
    m.rpc("v2.ConfigService/SetSmtp", "PERMISSION_DENIED", 0.0001)
    m.provider_call("vault", "ok", 0.02)
    m.provider_call("vault", "error", 0.5, "SecretNotFound")
    m.cache(hit=True)
    m.cache(hit=True)
    m.cache(hit=False)
    m.token_fetch(True, 0.1)
    m.token_fetch(False, 0.2)
    m.rate_limited("v2.ConfigService/TestSmtp")
    m.audit_record("written")

    get = "v2.ConfigService/GetSmtp"
    assert value(m, "smtpconfig_rpc_requests_total", method=get, code="OK") == 2
    assert value(m, "smtpconfig_rpc_duration_seconds_count", method=get, code="OK") == 2
    assert value(m, "smtpconfig_rpc_duration_seconds_sum", method=get, code="OK") == pytest.approx(0.006)
    assert value(m, "smtpconfig_rpc_duration_seconds_bucket", method=get, code="OK", le="0.0025") == 1
    assert value(m, "smtpconfig_rpc_requests_total", method="v2.ConfigService/SetSmtp", code="PERMISSION_DENIED") == 1
    assert value(m, "smtpconfig_provider_calls_total", provider_type="vault", outcome="ok") == 1
    assert value(m, "smtpconfig_provider_calls_total", provider_type="vault", outcome="error") == 1
    assert value(m, "smtpconfig_provider_call_duration_seconds_count", provider_type="vault") == 2
    assert value(m, "smtpconfig_provider_errors_total", provider_type="vault", error="SecretNotFound") == 1
    assert value(m, "smtpconfig_secret_cache_requests_total", result="hit") == 2
    assert value(m, "smtpconfig_secret_cache_requests_total", result="miss") == 1
    assert value(m, "smtpconfig_token_fetches_total", outcome="ok") == 1
    assert value(m, "smtpconfig_token_fetches_total", outcome="error") == 1
    assert value(m, "smtpconfig_token_fetch_duration_seconds_count") == 2
    assert value(m, "smtpconfig_rate_limited_total", method="v2.ConfigService/TestSmtp") == 1
    assert value(m, "smtpconfig_audit_records_total", outcome="written") == 1


def test_histograms_span_a_tenth_of_a_millisecond_to_thirty_seconds() -> None:
    m = Metrics()
    m.rpc("v2.ConfigService/GetSmtp", "OK", 0.00005)
    m.rpc("v2.ConfigService/GetSmtp", "OK", 29.0)
    labels = {"method": "v2.ConfigService/GetSmtp", "code": "OK"}
    assert value(m, "smtpconfig_rpc_duration_seconds_bucket", le="0.0001", **labels) == 1
    assert value(m, "smtpconfig_rpc_duration_seconds_bucket", le="10.0", **labels) == 1
    assert value(m, "smtpconfig_rpc_duration_seconds_bucket", le="30.0", **labels) == 2


def test_exposition_parses_and_holds_every_family() -> None:
    m = Metrics()
    m.rpc("v1.ConfigService/GetSmtp", "NOT_FOUND", 0.01)
    m.provider_call("exec", "error", 0.3, "Timeout")
    # prometheus_client's *_created series come along (turning them off is process-wide).
    families = {f.name for f in text_string_to_metric_families(m.exposition().decode())
                if not f.name.endswith("_created")}
    assert families == {
        "smtpconfig_rpc_requests", "smtpconfig_rpc_duration_seconds",
        "smtpconfig_provider_calls", "smtpconfig_provider_call_duration_seconds", "smtpconfig_provider_errors",
        "smtpconfig_secret_cache_requests", "smtpconfig_token_fetches", "smtpconfig_token_fetch_duration_seconds",
        "smtpconfig_rate_limited", "smtpconfig_audit_records",
    }
    parsed = samples(m.exposition().decode())
    assert parsed[("smtpconfig_provider_errors_total", (("error", "Timeout"), ("provider_type", "exec")))] == 1
    assert parsed[("smtpconfig_secret_cache_requests_total", (("result", "miss"),))] == 0  # present from the start


def test_two_metrics_objects_in_one_process_keep_their_own_counts() -> None:
    first, second = Metrics(), Metrics()
    first.cache(hit=True)
    first.rpc("v2.ConfigService/GetSmtp", "OK", 0.001)
    assert value(first, "smtpconfig_secret_cache_requests_total", result="hit") == 1
    assert value(second, "smtpconfig_secret_cache_requests_total", result="hit") == 0
    assert b"v2.ConfigService/GetSmtp" not in second.exposition()


def test_label_sets_beyond_the_cap_fold_into_other() -> None:
    m = Metrics()
    for n in range(MAX_SERIES + 50):
        m.rate_limited(f"unknown.Service/Method{n}")
    series = [s for f in text_string_to_metric_families(m.exposition().decode()) if f.name == "smtpconfig_rate_limited"
              for s in f.samples if s.name.endswith("_total")]
    assert len(series) == MAX_SERIES + 1
    assert value(m, "smtpconfig_rate_limited_total", method=OTHER) == 50


def test_serve_exposes_this_registry_over_http_until_stopped() -> None:
    m, other = Metrics(), Metrics()
    m.rpc("v2.ConfigService/GetSmtp", "OK", 0.003)
    m.token_fetch(True, 0.05)
    port = m.serve("127.0.0.1", 0)
    other_port = other.serve("127.0.0.1", 0)
    try:
        assert port != 0 and port != other_port
        with _DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            scraped = samples(answer.read().decode())
        labels = (("code", "OK"), ("method", "v2.ConfigService/GetSmtp"))
        assert scraped[("smtpconfig_rpc_requests_total", labels)] == 1
        assert scraped[("smtpconfig_token_fetches_total", (("outcome", "ok"),))] == 1
        with _DIRECT.open(f"http://127.0.0.1:{other_port}/metrics", timeout=5) as answer:
            assert ("smtpconfig_rpc_requests_total", labels) not in samples(answer.read().decode())
        with pytest.raises(RuntimeError):
            m.serve("127.0.0.1", 0)
    finally:
        m.stop()
        other.stop()
    with pytest.raises(urllib.error.URLError):
        _DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=2)
    m.stop()  # twice is harmless


def test_the_null_object_takes_every_call_and_records_nothing() -> None:
    NO_METRICS.rpc("v2.ConfigService/GetSmtp", "OK", 0.1)
    NO_METRICS.provider_call("vault", "error", 0.1, "AccessDenied")
    NO_METRICS.cache(hit=False)
    NO_METRICS.token_fetch(False, 0.1)
    NO_METRICS.rate_limited("m")
    NO_METRICS.audit_record("written")
    NO_METRICS.stop()
    assert NO_METRICS.exposition() == b""
    with pytest.raises(RuntimeError):
        NO_METRICS.serve("127.0.0.1", 0)


# --- the resolver and the token client, against real backends -----------------------------------

VENDOR = """#!/bin/sh
case "$1" in
  missing) exit 0 ;;
  broken) echo "vendor: backend offline" >&2; exit 3 ;;
  slow) sleep 0.3; printf 'PLANTED-slow-value-91c2' ;;
  *) printf 'PLANTED-%s-value-4d7e' "$1" ;;
esac
"""


def run_with_resolver(tmp_path: Path, scenario) -> Metrics:
    """Run `scenario(resolver)` against a real provider service (SQLite store, one declared `exec`
    instance with Id 5 running the VENDOR script); return the metrics it recorded."""
    cli = tmp_path / "vendor-cli"
    cli.write_text(VENDOR)
    cli.chmod(0o755)
    metrics = Metrics()
    plugins = load_plugins()
    table = {"id": 5, "name": "vendor", "type": "exec", "initialization": {"Command": json.dumps([str(cli), "{Name}"])}}

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "data")
        sealer = Sealer(os.urandom(32))
        providers = ProviderService(store, sealer, plugins, declared_instances([table], plugins, {}), asyncio.Lock())
        await providers.start()
        resolver = Resolver(providers, plugins, timeout=5, fingerprint=sealer.fingerprint, metrics=metrics)
        try:
            await scenario(resolver)
        finally:
            await resolver.close()
            await providers.stop()
            await store.close()

    asyncio.run(main())
    return metrics


def ref(name: str) -> ProviderRef:
    return ProviderRef(5, {"Name": name})


def test_resolver_counts_provider_calls_and_cache_hits(tmp_path: Path) -> None:
    async def scenario(resolver: Resolver) -> None:
        first = await resolver.resolve(ref("relay"))
        again = await resolver.resolve(ref("relay"))
        assert not first.cached and again.cached
        assert first.value.reveal() == "PLANTED-relay-value-4d7e"
        # Five at once share one call: the first is the miss, the four that join it are hits.
        joined = await asyncio.gather(*(resolver.resolve(ref("slow")) for _ in range(5)))
        assert {r.value.reveal() for r in joined} == {"PLANTED-slow-value-91c2"}

    m = run_with_resolver(tmp_path, scenario)
    assert value(m, "smtpconfig_provider_calls_total", provider_type="exec", outcome="ok") == 2
    assert value(m, "smtpconfig_provider_calls_total", provider_type="exec", outcome="error") == 0
    assert value(m, "smtpconfig_provider_call_duration_seconds_count", provider_type="exec") == 2
    assert value(m, "smtpconfig_provider_call_duration_seconds_sum", provider_type="exec") >= 0.3
    assert value(m, "smtpconfig_secret_cache_requests_total", result="miss") == 2
    assert value(m, "smtpconfig_secret_cache_requests_total", result="hit") == 5


def test_a_refresh_bypasses_the_cache_and_a_call_in_flight_and_later_callers_share_it(tmp_path: Path) -> None:
    async def scenario(resolver: Resolver) -> None:
        first = await resolver.resolve(ref("relay"))
        fresh = await resolver.resolve(ref("relay"), refresh=True)
        assert not fresh.cached and fresh.value == first.value  # read again, not from the cache
        assert (await resolver.resolve(ref("relay"))).cached
        # A call already in flight may have begun before a rotation: a refresh starts its own,
        # and plain callers coming after it join that fresh one.
        before = asyncio.create_task(resolver.resolve(ref("slow")))
        await asyncio.sleep(0.05)
        refreshed = asyncio.create_task(resolver.resolve(ref("slow"), refresh=True))
        await asyncio.sleep(0.05)
        joined = await asyncio.gather(*(resolver.resolve(ref("slow")) for _ in range(3)))
        await asyncio.gather(before, refreshed)
        assert {r.value.reveal() for r in joined} == {"PLANTED-slow-value-91c2"}
        assert (await resolver.resolve(ref("slow"))).cached

    m = run_with_resolver(tmp_path, scenario)
    # relay twice (the refresh), slow twice (the first call and the refresh's own).
    assert value(m, "smtpconfig_provider_calls_total", provider_type="exec", outcome="ok") == 4
    assert value(m, "smtpconfig_secret_cache_requests_total", result="miss") == 4
    assert value(m, "smtpconfig_secret_cache_requests_total", result="hit") == 5


def test_resolver_counts_errors_by_provider_error_class(tmp_path: Path) -> None:
    async def scenario(resolver: Resolver) -> None:
        for name in ("missing", "missing", "broken", "-dash"):
            with pytest.raises(Exception):  # noqa: B017 (each name fails with a different error class, counted below)
                await resolver.resolve(ref(name))

    m = run_with_resolver(tmp_path, scenario)
    errors = {
        kind: value(m, "smtpconfig_provider_errors_total", provider_type="exec", error=kind)
        for kind in ("SecretNotFound", "ProviderUnavailable", "BadParameters", "Timeout")
    }
    # The second "missing" is the remembered failure: a cache hit, not another call.
    assert errors == {"SecretNotFound": 1, "ProviderUnavailable": 1, "BadParameters": 1, "Timeout": 0}
    assert value(m, "smtpconfig_provider_calls_total", provider_type="exec", outcome="error") == 3
    assert value(m, "smtpconfig_secret_cache_requests_total", result="hit") == 1
    assert value(m, "smtpconfig_secret_cache_requests_total", result="miss") == 3
    # Label values are names chosen by code; no value or reference reaches the exposition.
    text = m.exposition().decode()
    assert "PLANTED" not in text and "missing" not in text and "broken" not in text


def test_inline_values_count_as_inline_provider_calls_without_a_cache_lookup(tmp_path: Path) -> None:
    async def scenario(resolver: Resolver) -> None:
        await resolver.resolve(InlineSecret(Secret("PLANTED-inline-value-0b3a")))

    m = run_with_resolver(tmp_path, scenario)
    assert value(m, "smtpconfig_provider_calls_total", provider_type="inline", outcome="ok") == 1
    assert value(m, "smtpconfig_secret_cache_requests_total", result="hit") == 0
    assert value(m, "smtpconfig_secret_cache_requests_total", result="miss") == 0


def test_fetched_values_are_handed_to_the_log_redactor(tmp_path: Path) -> None:
    forget_secrets()

    async def scenario(resolver: Resolver) -> None:
        await resolver.resolve(ref("relay"))
        await resolver.resolve(InlineSecret(Secret("PLANTED-inline-value-0b3a")))

    run_with_resolver(tmp_path, scenario)
    shown = redact("got PLANTED-relay-value-4d7e and PLANTED-inline-value-0b3a")
    assert shown == "got [REDACTED] and [REDACTED]"


def test_token_client_counts_fetches_not_cached_tokens() -> None:
    forget_secrets()
    m = Metrics()
    with TokenEndpoint({"smtp-relay": "PLANTED-client-secret-77aa"}, expires_in=3600) as endpoint:
        client = TokenClient(timeout=5, metrics=m)
        good = TokenRequest(endpoint.url, Secret("smtp-relay"), Secret("PLANTED-client-secret-77aa"))
        bad = TokenRequest(endpoint.url, Secret("smtp-relay"), Secret("wrong-secret"))

        async def scenario():
            token = await client.token(good)
            await client.token(good)  # cached: no fetch
            with pytest.raises(TokenError):
                await client.token(bad)
            return token

        token = asyncio.run(scenario())
    assert value(m, "smtpconfig_token_fetches_total", outcome="ok") == 1
    assert value(m, "smtpconfig_token_fetches_total", outcome="error") == 1
    assert value(m, "smtpconfig_token_fetch_duration_seconds_count") == 2
    assert redact(f"token {token.value.reveal()}") == "token [REDACTED]"
