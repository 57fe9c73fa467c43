"""Prometheus metrics of one server: a `Metrics` object owning its own registry, and `NO_METRICS`.

Each `Metrics` has a private `CollectorRegistry`, so several servers in one process (tests) never
share or clash over series. The recording methods sit on the path of every RPC and every secret
resolution, and all of them run on the event loop, so the counters (`_LoopCounter`) and latency
histograms (`_LoopHistogram`, and the RPC counter, their count) are plain numbers in dicts keyed by
the label values, which a scrape (on the metrics thread) turns into metric families: an event
costs a dict lookup and an addition, not prometheus_client's `.labels()` validation and a lock.
(The token fetch histogram, a few calls a minute, stays prometheus_client's.)

Label values are names chosen by code (method names, status code names, provider type names,
exception class names, fixed outcome words), never values from a request or a secret. Each family
still holds at most `MAX_SERIES` label sets; later ones are counted under ``other``, so a caller
naming arbitrary methods cannot grow memory without bound.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

#: Seconds, from a cached resolution (0.1 ms) to a slow SMTP or backend exchange (30 s).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
#: Distinct label sets kept per family before new ones fold into ``other``.
MAX_SERIES = 1000
OTHER = "other"


class _Cell:
    """One labelled counter's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _LoopCounter:
    """A counter family kept as plain numbers, one `_Cell` per label tuple, turned into a metric
    family when scraped. Only the event loop increments; `get` hands out the cell, so a caller that
    keeps one (the cache's hit and miss) pays a float addition per event and nothing else."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._cells: dict[tuple[str, ...], _Cell] = {}

    def get(self, labels: tuple[str, ...]) -> _Cell:
        cell = self._cells.get(labels)
        if cell is None:
            if len(self._cells) >= MAX_SERIES:
                labels = (OTHER,) * len(labels)
                cell = self._cells.get(labels)
            if cell is None:
                cell = self._cells[labels] = _Cell()
        return cell

    def collect(self):
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, cell in list(self._cells.items()):
            family.add_metric(labels, cell.value)
        yield family

    def describe(self):
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labels)]


class _LoopHistogram:
    """A histogram family (and, if named, a counter of the same observations), kept as plain numbers
    and turned into metric families when scraped.

    Every RPC and every resolution records here, on the event loop, thousands of times a second. A
    prometheus_client Histogram takes a lock and walks the buckets in Python; here an observation
    costs a dict lookup, a `bisect` (in C) and two additions. Only the event loop records; a scrape,
    on the metrics thread, copies each series' numbers as it reads them.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 counter: tuple[str, str] | None = None) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._counter = counter  # (name without _total, documentation) of the counter, if any
        # label values -> [observations per bucket (LATENCY_BUCKETS, then +Inf)..., sum]
        self._series: dict[tuple[str, ...], list] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._new(labels)
        series[bisect_left(LATENCY_BUCKETS, value)] += 1
        series[-1] += value

    def _new(self, labels: tuple[str, ...]) -> list:
        if len(self._series) >= MAX_SERIES:
            labels = (OTHER,) * len(labels)
            if labels in self._series:
                return self._series[labels]
        series = self._series[labels] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        return series

    def _families(self) -> tuple[CounterMetricFamily | None, HistogramMetricFamily]:
        counter = None
        if self._counter is not None:
            counter = CounterMetricFamily(self._counter[0], self._counter[1], labels=self._labels)
        return counter, HistogramMetricFamily(self._name, self._documentation, labels=self._labels)

    def collect(self):
        counter, histogram = self._families()
        for labels, series in list(self._series.items()):
            numbers = list(series)
            buckets, count = [], 0
            for bound, observed in zip(_BOUNDS, numbers[:-1], strict=True):
                count += observed
                buckets.append((bound, count))
            if counter is not None:
                counter.add_metric(labels, count)
            histogram.add_metric(labels, buckets, numbers[-1])
        if counter is not None:
            yield counter
        yield histogram

    def describe(self):
        # The families' names, so that the registry can tell them from the others.
        return [family for family in self._families() if family is not None]


_BOUNDS = (*(floatToGoString(bound) for bound in LATENCY_BUCKETS), "+Inf")


class Metrics:
    """The service's instruments, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._rpcs = _LoopHistogram(
            "smtpconfig_rpc_duration_seconds", "Time to answer an RPC, by method and status code.",
            ("method", "code"), counter=("smtpconfig_rpc_requests", "RPCs answered, by method and status code."))
        r.register(self._rpcs)
        self._provider_total = self._counter(
            "smtpconfig_provider_calls", "Secret provider resolve calls, by type and outcome (ok, error).",
            ("provider_type", "outcome"))
        self._provider_seconds = _LoopHistogram(
            "smtpconfig_provider_call_duration_seconds", "Time a secret provider resolve call took.",
            ("provider_type",))
        r.register(self._provider_seconds)
        self._provider_errors = self._counter(
            "smtpconfig_provider_errors", "Failed secret provider calls, by type and error class.",
            ("provider_type", "error"))
        self._cache = self._counter(
            "smtpconfig_secret_cache_requests",
            "Secret resolutions served from the cache (hit) or needing a provider call (miss).", ("result",))
        self._token_total = self._counter(
            "smtpconfig_token_fetches", "OAuth token fetches from token endpoints, by outcome (ok, error).",
            ("outcome",))
        self._token_seconds = Histogram(
            "smtpconfig_token_fetch_duration_seconds", "Time an OAuth token fetch took.",
            buckets=LATENCY_BUCKETS, registry=r)
        self._rate_limited = self._counter(
            "smtpconfig_rate_limited", "RPCs refused by the rate limiter, by method.",
            ("method",))
        self._audit = self._counter(
            "smtpconfig_audit_records", "Audit records, by outcome.", ("outcome",))
        self._hit = self._cache.get(("hit",))
        self._miss = self._cache.get(("miss",))
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...]) -> _LoopCounter:
        counter = _LoopCounter(name, documentation, labels)
        self.registry.register(counter)
        return counter

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """One answered RPC. `method`: ``v2.ConfigService/GetSmtp``; `code`: a status code name, ``OK``."""
        self._rpcs.observe((method, code), seconds)

    def provider_call(self, provider_type: str, outcome: str, seconds: float, error: str | None = None) -> None:
        """One provider resolve call. `outcome`: ``ok`` or ``error``; `error`: the error's class name."""
        self._provider_total.get((provider_type, outcome)).inc()
        self._provider_seconds.observe((provider_type,), seconds)
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
