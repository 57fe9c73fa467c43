"""`make bench` keeps working: a very short run produces every row, both latency phases and the verdicts
(no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_benchmark_run_reports_every_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--seconds", "0.3", "--warmup", "0.1", "--rounds", "2",
         "--in-flight", "1,4", "--waiting", "4", "--vault-secrets", "20", "--smtp-calls", "4", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {(r["label"], r["in_flight"]) for r in report["results"]}
    for level in (1, 4):
        assert {("bare-aio", level), ("bare-threads", level), ("GetSmtp (v2)", level)} <= rows
        assert ("CheckSecret (warm)", level) in rows
        assert ("ResolveSmtp (warm)", level) in rows
    suites = {(r["suite"], r["label"]) for r in report["results"]}
    assert {("ResolveSmtp", "bare-aio"), ("ResolveSmtp", "ResolveSmtp (warm)")} <= suites
    assert {("bare-aio +4 waiting", 16), ("bare-threads +4 waiting", 16)} <= rows
    for row in report["results"]:
        assert row["qps"] > 0 and row["errors"] == 0 and len(row["rounds"]) == 2
    assert report["goal"]["met"] is None  # 64 in flight was not measured
    assert [g["statement"] for g in report["goals"]][2] == "ResolveSmtp (warm) at 64 in flight >= 0.8 of bare-aio QPS"
    smtp = report["smtp"]
    assert smtp["direct"]["calls"] == smtp["service"]["calls"] == 4 and smtp["ratio_service_to_direct"] > 0
    vault = report["vault"]
    assert vault["direct"]["calls"] == vault["service"]["calls"] == 10 and vault["service"]["cached"] == 0
    assert report["goals"][-1]["met"] is not None  # the Vault goal is measured even in this short run
