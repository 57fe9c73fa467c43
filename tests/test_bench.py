"""`make bench` keeps working: a very short run produces every row (TLS and mTLS included), both
latency phases, the edge and workers phases, the transport ratios, the resident memory table and
the verdicts (no timing asserted)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import BARE_AIO, WAIT_PATH, WAIT_SECONDS, BenchError, report, tightloop, workersphase
from bench.load import Command, measure
from bench.procs import Child
from bench.seed import SECRET_VALUE

ROOT = Path(__file__).resolve().parent.parent


def test_short_benchmark_run_reports_every_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--seconds", "0.3", "--warmup", "0.1", "--rounds", "2",
         "--in-flight", "1,4", "--tls-in-flight", "4", "--waiting", "4", "--vault-secrets", "20", "--smtp-calls", "4",
         # The Python load generators: h2load is not part of the test setup (tests/test_bench_h2load.py).
         "--workers-load", "python", "--json"],
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
    # Each suite's floor, the echo that checks (and for the audited ones records), at the highest level only.
    floors = [(r["suite"], r["label"], r["in_flight"]) for r in report["results"] if r["target"].startswith("floor-")]
    assert floors == [("GetSmtp", "checks echo (no record)", 4), ("CheckSecret", "checks+record echo", 4),
                      ("ResolveSmtp", "checks+record echo", 4)]
    assert {("bare-aio +4 waiting", 16), ("bare-threads +4 waiting", 16)} <= rows
    # Over TLS only at 4 in flight (--tls-in-flight), to keep this run short.
    tls_rows = {("bare-aio TLS", 4), ("GetSmtp (v2) TLS+token", 4), ("bare-aio mTLS", 4), ("GetSmtp (v2) mTLS", 4)}
    assert tls_rows <= rows and not {(label, 1) for label, _ in tls_rows} & rows
    for row in report["results"]:
        assert row["qps"] > 0 and row["errors"] == 0 and len(row["rounds"]) == 2
        # The main thread's CPU is part of the process's (both read from /proc in one window); on
        # the grpc.aio servers it is the event loop's, busy on every call. (bare-threads' waits.)
        assert 0 <= row["server_loop_cpu"] <= row["server_cpu"] + 0.02
        if not row["target"].startswith("bare-threads"):
            assert row["server_loop_cpu"] > 0, row["label"]
        if row["target"] in ("service-tls", "service-mtls"):  # paired with the bare-aio of its transport
            assert row["baseline"] == row["target"].replace("service", "bare-aio") and row["ratio_vs_baseline"] > 0
        else:
            assert row["baseline"] is None and row["ratio_vs_baseline"] is None
    assert report["settings"]["tls_in_flight"] == [4]
    ratios = {(r["statement"], r["in_flight"]): r for r in report["transport_ratios"]}
    for statement in ("token, plaintext / bare-aio plaintext", "mTLS / bare-aio mTLS", "mTLS / bare-aio plaintext",
                      "TLS+token / bare-aio TLS"):
        assert ratios[statement, 4]["qps_ratio"] > 0 and ratios[statement, 4]["p99_ratio"] > 0
    assert ("token, plaintext / bare-aio plaintext", 1) in ratios and ("mTLS / bare-aio mTLS", 1) not in ratios
    memory = {m["label"]: m for m in report["memory"]}
    assert set(memory) == {"bare-aio", "bare-threads", "GetSmtp (v2)", "bare-aio TLS", "GetSmtp (v2) TLS+token",
                           "bare-aio mTLS", "GetSmtp (v2) mTLS"}
    for m in memory.values():
        assert m["in_flight"] == 4 and m["idle_rss_mib"] > 0 and m["load_rss_max_mib"] > 0
        assert m["peak_hwm_mib"] >= m["after_rss_mib"] > 0  # VmHWM is never below VmRSS read with it
    assert report["goal"]["met"] is None  # 64 in flight was not measured
    at_one = report["goals"][1]  # GetSmtp at 1 in flight: measured, with each round's ratio
    assert len(at_one["rounds"]) == 2 and at_one["ratio"] == pytest.approx(statistics.median(at_one["rounds"]))
    assert [g["statement"] for g in report["goals"]][:4] == [
        "GetSmtp (v2) at 64 in flight >= 0.85 of bare-aio QPS", "GetSmtp (v2) at 1 in flight >= 0.9 of bare-aio QPS",
        "CheckSecret (warm) at 64 in flight >= 0.8 of bare-aio QPS", "ResolveSmtp (warm) at 64 in flight >= 0.8 of bare-aio QPS",
    ]
    smtp = report["smtp"]
    assert smtp["direct"]["calls"] == smtp["service"]["calls"] == 4 and smtp["ratio_service_to_direct"] > 0
    smtp_goal = next(g for g in report["goals"] if g["statement"].startswith("TestSmtp"))
    assert smtp_goal["ratio"] == smtp["ratio_service_to_direct"] and smtp_goal["met"] is not None
    vault = report["vault"]
    assert vault["direct"]["calls"] == vault["service"]["calls"] == 10 and vault["service"]["cached"] == 0
    assert vault["echo"]["calls"] == vault["resolve_smtp"]["calls"] == 10
    assert vault["ratio_service_to_echo_and_direct"] > 0 and vault["ratio_resolve_to_direct"] > 0
    memory_goal = next(g for g in report["goals"] if g["statement"].startswith("idle resident memory"))
    assert memory_goal["met"] is not None and memory_goal["ratio"] > 0
    assert report["goals"][-1]["met"] is not None  # the Vault goals are measured even in this short run
    assert report["goals"][-1]["statement"] == "cold Vault CheckSecret p50 <= 1.15x (bare-aio echo + direct hvac read)"
    assert report["goals"][-2]["statement"] == (
        "warm ResolveSmtp (Vault password) p50 at 1 in flight < 0.5x a direct hvac read")
    assert report["goals"][-2]["met"] is not None
    # The edge phase: through an edge on a Unix socket, at the default 64 in flight and at 1.
    edge = report["edge"]
    assert edge["in_flight"] == 64 and len(edge["rounds"]) == 2
    assert edge["edge"]["qps"] > 0 and edge["bare_aio"]["qps"] > 0 and edge["edge_1"]["p50_ms"] > 0
    assert edge["direct"]["calls"] > 0 and edge["qps_ratio"] > 0 and edge["latency_ratio"] > 0
    assert edge["bare_aio_1"]["p50_ms"] > 0 and edge["bare_latency_ratio"] > 0  # the floor of the p50 goal
    # The floor of the throughput goal: the echo that checks and records, on a Unix socket too.
    assert edge["floor"]["qps"] > 0 and edge["floor_ratio"] > 0 and edge["to_floor"] > 0
    assert all(r["floor_qps"] > 0 for r in edge["rounds"])
    edge_goals = {g["statement"]: g for g in report["goals"]}
    qps_goal = "ResolveSmtp via edge (Unix socket) at 64 in flight >= 0.8 of bare-aio (Unix socket) QPS"
    assert edge_goals[qps_goal]["met"] is not None
    assert edge_goals[qps_goal]["floor"] == edge["floor_ratio"] and edge_goals[qps_goal]["to_floor"] == edge["to_floor"]
    assert edge_goals["ResolveSmtp via edge p50 at 1 in flight < 0.5x a direct hvac read"]["met"] is not None
    # The workers phase: serve --workers 2 against --workers 1, GetSmtp at 64 in flight, paired rounds.
    workers = report["workers"]
    assert workers["in_flight"] == 64 and len(workers["rounds"]) == 4 and workers["ratio"] > 0
    assert workers["load"] == "python" and workers["connections"] == 8
    for count in ("workers_2", "workers_1"):
        assert workers[count]["qps"] > 0 and workers[count]["server_us_per_call"] > 0
        assert workers[count]["client_us_per_call"] > 0
    assert len(workers["memory_idle"]["2"]["workers"]) == 2 and workers["memory_idle"]["2"]["supervisor"] > 0
    workers_goal = "GetSmtp QPS with workers = 2 at 64 in flight >= 1.6 of workers = 1"
    assert edge_goals[workers_goal]["met"] is not None


def test_the_cpu_table_splits_each_grpc_aio_row_per_call() -> None:
    def row(target: str, label: str, suite: str, qps: float, server: float, loop: float, client: float) -> dict:
        return {"target": target, "label": label, "suite": suite, "in_flight": 64, "qps": qps,
                "server_cpu": server, "server_loop_cpu": loop, "client_cpu": client}

    rows = [
        row("bare-aio", "bare-aio", "GetSmtp", 10_000, 1.2, 0.8, 0.9),
        row("bare-threads", "bare-threads", "GetSmtp", 10_000, 1.0, 0.0, 0.7),  # no event loop: left out
        row("service", "GetSmtp (v2)", "GetSmtp", 8_000, 1.2, 0.96, 0.8),
        {**row("service", "GetSmtp (v2)", "GetSmtp", 2_000, 0.5, 0.3, 0.4), "in_flight": 1},  # a lower level
    ]
    lines = report._cpu_table(rows)
    assert lines[0].startswith("CPU per call at 64 in flight")
    assert [line.split()[-4:] for line in lines[2:]] == [["120", "80", "40", "90"], ["150", "120", "30", "100"]]


def test_a_qps_goal_shows_each_round_against_its_threshold() -> None:
    def measured(target: str, round_: int, qps: float) -> dict:
        return {"suite": "GetSmtp", "target": target, "in_flight": 64, "waiting": 0, "round": round_, "qps": qps,
                "p50_ms": 1.0, "p99_ms": 2.0}

    bare, service = (9000, 10000, 8000), (8100, 8000, 7600)  # ratios 0.90, 0.80, 0.95: median 0.90
    rows = report.summarize([measured("bare-aio", n + 1, q) for n, q in enumerate(bare)]
                            + [measured("service", n + 1, q) for n, q in enumerate(service)], "median")
    verdict = report.goal(rows, "service", 64, 0.85)
    assert verdict["rounds"] == pytest.approx([0.9, 0.8, 0.95]) and verdict["ratio"] == pytest.approx(0.9)
    assert report._goal_lines([verdict]) == [
        "goal GetSmtp (v2) at 64 in flight >= 0.85 of bare-aio QPS: MET (0.90; rounds 0.80-0.95, 2 of 3 at or above 0.85)"
    ]
    # A single round has no spread to show.
    one = report.summarize([measured("bare-aio", 1, 9000), measured("service", 1, 7200)], "median")
    assert report._goal_lines([report.goal(one, "service", 64, 0.85)]) == [
        "goal GetSmtp (v2) at 64 in flight >= 0.85 of bare-aio QPS: NOT MET (0.80)"
    ]


def test_an_audited_goal_names_its_floor_and_the_share_of_it_the_method_keeps() -> None:
    def measured(target: str, round_: int, qps: float) -> dict:
        return {"suite": "ResolveSmtp", "target": target, "in_flight": 64, "waiting": 0, "round": round_, "qps": qps,
                "p50_ms": 1.0, "p99_ms": 2.0}

    bare, floor, service = (10000, 9000, 11000), (8000, 7200, 8800), (6000, 6300, 6600)
    rows = report.summarize([measured(target, n + 1, q) for target, each in
                             (("bare-aio", bare), ("floor-resolvesmtp", floor), ("resolvesmtp", service))
                             for n, q in enumerate(each)], "median")
    verdict = report.goal(rows, "resolvesmtp", 64, 0.8)
    # The floor's ratio to bare-aio, and the method's to the floor, each paired by round.
    assert verdict["floor"] == pytest.approx(0.8) and verdict["to_floor"] == pytest.approx(0.75)
    assert verdict["ratio"] == pytest.approx(0.6) and verdict["met"] is False
    assert report._goal_lines([verdict]) == [
        "goal ResolveSmtp (warm) at 64 in flight >= 0.8 of bare-aio QPS: NOT MET (0.60; rounds 0.60-0.70, 0 of 3 at"
        " or above 0.8); checks+record echo: 0.80 of bare-aio, this 0.75 of it"
    ]
    # Without the floor measured (or for GetSmtp, which has none) the line is as before.
    without = report.goal([r for r in rows if r["target"] != "floor-resolvesmtp"], "resolvesmtp", 64, 0.8)
    assert "floor" not in without and not report._goal_lines([without])[0].endswith("of it")


def test_a_window_without_a_call_is_an_error_unless_another_generator_shares_the_server() -> None:
    # Every call of the echo server's Wait method takes WAIT_SECONDS, longer than this window, so
    # none starts and ends inside it, though every one ends.
    with Child(BARE_AIO, "bench.servers", BARE_AIO, "--options", "[]") as server:
        command = Command(target=f"127.0.0.1:{server.read_port()}", method=WAIT_PATH, payload_size=4, in_flight=3,
                          seconds=WAIT_SECONDS / 2, warmup=0.01, server_pid=server.pid)
        with pytest.raises(RuntimeError, match=r"no call completed inside the window \(0 errors; None\); 3 calls ended"):
            asyncio.run(measure(command))
        empty = asyncio.run(measure(dataclasses.replace(command, allow_empty=True)))
    assert (empty.calls, empty.qps, empty.p50_ms, empty.p99_ms, empty.errors) == (0, 0.0, None, None, 0)
    assert empty.server_cpu is not None


def test_the_workers_rows_count_starved_generators_and_fail_when_all_are() -> None:
    def reply(calls: int, qps: float, p50: float | None, p99: float | None) -> dict:
        return {"calls": calls, "qps": qps, "p50_ms": p50, "p99_ms": p99, "server_cpu": 1.0, "client_cpu": 0.3,
                "other_cpu": None}

    row = workersphase._row(1, 2, [reply(0, 0.0, None, None), reply(1500, 5000.0, 4.0, 30.0)])
    assert (row["qps"], row["p50_ms"], row["p99_ms"], row["starved"]) == (5000.0, 4.0, 30.0, 1)
    with pytest.raises(BenchError, match="no call of any load generator"):
        workersphase._row(1, 2, [reply(0, 0.0, None, None)] * 2)
    lines = report._workers_table({
        "generators": 2, "channels_per_generator": 4, "in_flight": 64, "cpus": 2, "ratio": 1.2, "starved_windows": 1,
        **{f"workers_{n}": {**row, "other_cpu": None, "server_us_per_call": 150.0, "client_us_per_call": 90.0}
           for n in (1, 2)},
    })
    assert "in 1 window(s) one load generator had no call end inside it" in lines[-1]


def test_the_tight_loop_times_each_method_through_the_real_handlers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.tightloop", "--calls", "50", "--profile", "CheckSecret"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    timed = [line.rsplit(maxsplit=6) for line in lines if line.startswith("  ") and "µs wall" in line]
    assert [row[0].strip() for row in timed] == ["GetSmtp", "ResolveSmtp", "CheckSecret", "audited echo",
                                               "checks echo (no record)", "checks+record echo"]
    assert all(float(row[1]) > 0 and float(row[4]) > 0 for row in timed)
    # The profile names the guard and the servicer: the calls went through our code, not a stub.
    assert "CheckSecret: own time by function over 50 calls" in result.stdout
    assert "calls.py" in result.stdout and "provider_servicer.py" in result.stdout
    assert SECRET_VALUE not in result.stdout + result.stderr


def test_the_tight_loop_can_time_each_call_after_evicting_the_caches() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.tightloop", "--calls", "30", "--evict", "2M"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 MiB written before each call (30 calls each" in result.stdout
    timed = [line.rsplit(maxsplit=6) for line in result.stdout.splitlines() if "µs median" in line]
    assert [row[0].strip() for row in timed] == ["GetSmtp", "ResolveSmtp", "CheckSecret", "audited echo",
                                               "checks echo (no record)", "checks+record echo"]
    assert all(float(row[1]) > 0 and float(row[4]) >= float(row[1]) * 0.5 for row in timed)
    assert SECRET_VALUE not in result.stdout + result.stderr


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("4096", 4096), ("2K", 2048), ("16M", 16 << 20),
                                            ("16MiB", 16 << 20), ("1g", 1 << 30)])
def test_eviction_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert tightloop.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "sixteen", "1.5M", "16T"])
def test_an_eviction_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        tightloop.parse_size(text)


def test_the_evictor_rewrites_every_cache_line_of_its_buffer_each_time() -> None:
    evictor = tightloop.Evictor(64 * 100 + 10)
    evictor()
    first = bytes(evictor._buffer[::tightloop.LINE])
    evictor()
    second = bytes(evictor._buffer[::tightloop.LINE])
    assert len(first) == 101 and first != second and set(first) | set(second) == {0, 1}
    tightloop.Evictor(0)()  # nothing to write
