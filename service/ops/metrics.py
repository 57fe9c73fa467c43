"""Prometheus metrics of one server: a `Metrics` object owning its own registry, and `NO_METRICS`.

Each `Metrics` has a private `CollectorRegistry`, so several servers in one process (tests) never
share or clash over series. The recording methods sit on the path of every RPC and every secret
resolution: each keeps the labelled children it has made in a dict keyed by the label values, so a
call costs one dict lookup plus the increments, not a `.labels()` call with its validation and lock.

Label values are names chosen by code (method names, status code names, provider type names,
exception class names, fixed outcome words), never values from a request or a secret. Each family
still holds at most `MAX_SERIES` label sets; later ones are counted under ``other``, so a caller
naming arbitrary methods cannot grow memory without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server

#: Seconds, from a cached resolution (0.1 ms) to a slow SMTP or backend exchange (30 s).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
#: Distinct label sets kept per family before new ones fold into ``other``.
MAX_SERIES = 1000
OTHER = "other"


class _Children:
    """The labelled children of one metric family, made once per label tuple."""

    __slots__ = ("_family", "_made")

    def __init__(self, family: Counter | Histogram) -> None:
        self._family = family
        self._made: dict[Hashable, object] = {}

    def get(self, labels: tuple[str, ...]):
        child = self._made.get(labels)
        if child is None:
            # Two threads may both get here for one tuple; .labels() hands both the same child.
            if len(self._made) >= MAX_SERIES:
                labels = (OTHER,) * len(labels)
                child = self._made.get(labels)
            if child is None:
                child = self._made[labels] = self._family.labels(*labels)
        return child


class Metrics:
    """The service's instruments, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._rpc_total = _Children(Counter(
            "smtpconfig_rpc_requests_total", "RPCs answered, by method and status code.",
            ("method", "code"), registry=r))
        self._rpc_seconds = _Children(Histogram(
            "smtpconfig_rpc_duration_seconds", "Time to answer an RPC, by method and status code.",
            ("method", "code"), buckets=LATENCY_BUCKETS, registry=r))
        self._provider_total = _Children(Counter(
            "smtpconfig_provider_calls_total", "Secret provider resolve calls, by type and outcome (ok, error).",
            ("provider_type", "outcome"), registry=r))
        self._provider_seconds = _Children(Histogram(
            "smtpconfig_provider_call_duration_seconds", "Time a secret provider resolve call took.",
            ("provider_type",), buckets=LATENCY_BUCKETS, registry=r))
        self._provider_errors = _Children(Counter(
            "smtpconfig_provider_errors_total", "Failed secret provider calls, by type and error class.",
            ("provider_type", "error"), registry=r))
        self._cache = _Children(Counter(
            "smtpconfig_secret_cache_requests_total",
            "Secret resolutions served from the cache (hit) or needing a provider call (miss).",
            ("result",), registry=r))
        self._token_total = _Children(Counter(
            "smtpconfig_token_fetches_total", "OAuth token fetches from token endpoints, by outcome (ok, error).",
            ("outcome",), registry=r))
        self._token_seconds = Histogram(
            "smtpconfig_token_fetch_duration_seconds", "Time an OAuth token fetch took.",
            buckets=LATENCY_BUCKETS, registry=r)
        self._rate_limited = _Children(Counter(
            "smtpconfig_rate_limited_total", "RPCs refused by the rate limiter, by method.",
            ("method",), registry=r))
        self._audit = _Children(Counter(
            "smtpconfig_audit_records_total", "Audit records, by outcome.", ("outcome",), registry=r))
        self._hit = self._cache.get(("hit",))
        self._miss = self._cache.get(("miss",))
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """One answered RPC. `method`: ``v2.ConfigService/GetSmtp``; `code`: a status code name, ``OK``."""
        labels = (method, code)
        self._rpc_total.get(labels).inc()
        self._rpc_seconds.get(labels).observe(seconds)

    def provider_call(self, provider_type: str, outcome: str, seconds: float, error: str | None = None) -> None:
        """One provider resolve call. `outcome`: ``ok`` or ``error``; `error`: the error's class name."""
        self._provider_total.get((provider_type, outcome)).inc()
        self._provider_seconds.get((provider_type,)).observe(seconds)
        if error is not None:
            self._provider_errors.get((provider_type, error)).inc()

    def cache(self, hit: bool) -> None:
        """One resolution that looked in the secret cache."""
        (self._hit if hit else self._miss).inc()

    def token_fetch(self, ok: bool, seconds: float) -> None:
        """One OAuth token fetch from a token endpoint (cached tokens are not fetches)."""
        self._token_total.get(("ok" if ok else "error",)).inc()
        self._token_seconds.observe(seconds)

    def rate_limited(self, method: str) -> None:
        """One RPC refused by the rate limiter."""
        self._rate_limited.get((method,)).inc()

    def audit_record(self, outcome: str) -> None:
        """One audit record, by outcome (as the audit writer names them)."""
        self._audit.get((outcome,)).inc()

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` for this registry over HTTP on `host`:`port` from a daemon thread;
        return the bound port (port 0 picks a free one)."""
        if self._http is not None:
            raise RuntimeError("metrics are already served")
        http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = http
        return http.server_address[1]

    def stop(self) -> None:
        """Stop the HTTP server, if one runs."""
        http, thread = self._http, self._http_thread
        self._http = self._http_thread = None
        if http is not None:
            http.shutdown()
            http.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class NullMetrics:
    """The same methods as `Metrics`, recording nothing: for code built without metrics."""

    def rpc(self, method: str, code: str, seconds: float) -> None:
        pass

    def provider_call(self, provider_type: str, outcome: str, seconds: float, error: str | None = None) -> None:
        pass

    def cache(self, hit: bool) -> None:
        pass

    def token_fetch(self, ok: bool, seconds: float) -> None:
        pass

    def rate_limited(self, method: str) -> None:
        pass

    def audit_record(self, outcome: str) -> None:
        pass

    def serve(self, host: str, port: int) -> int:
        raise RuntimeError("metrics are disabled; build a Metrics to serve them")

    def stop(self) -> None:
        pass

    def exposition(self) -> bytes:
        return b""


NO_METRICS = NullMetrics()

#: What instrumented code accepts.
AnyMetrics = Metrics | NullMetrics
