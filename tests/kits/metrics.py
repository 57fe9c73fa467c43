"""The /metrics endpoint read the way Prometheus reads it: scrape before and after some traffic,
then ask how far one sample moved."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Only loopback: a proxy from the environment must not see (or answer) the scrape.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[str, Samples]:
    """The exposition text of 127.0.0.1:`port`/metrics, and its samples by name and labels."""
    with _DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample `name` with exactly `labels` changed (absent counts as 0)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)
