"""`bench.h2load`: the workers phase's load from h2load, and the checks that keep it honest.

h2load (Debian's nghttp2-client) is not part of the test setup, as perf is not for
`bench.profile`: these tests feed what h2load printed in a real run to the parser and the
checks, and check that a missing h2load is a clear error before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import BenchError, h2load, report, workersphase

# What `h2load -n 20000 -c 8 -m 8 -t 1 ...` printed against `smtpconfig serve` (GetSmtp, answers
# of 111 bytes: 116 framed), without its progress lines.
REAL_RUN = """\
starting benchmark...
spawning thread #0: 8 total client(s). 20000 total requests
Application protocol: h2c

finished in 1.88s, 10664.02 req/s, 1.77MB/s
requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 3.32MB (3479477) total, 59.18KB (60600) headers (space savings 96.26%), 2.21MB (2320000) data
                     min         max         mean         sd        +/- sd
time for request:      171us     28.58ms      5.98ms      1.81ms    95.41%
time for connect:      127us       659us       331us       188us    62.50%
time to 1st byte:     2.19ms     14.09ms      8.16ms      3.91ms    75.00%
req/s           :    1333.38     1336.93     1334.55        1.25    75.00%
"""
ANSWER = 111


def test_the_report_is_read_whole() -> None:
    got = h2load.parse(REAL_RUN)
    assert got == {"seconds": 1.88, "total": 20000, "done": 20000, "succeeded": 20000, "failed": 0,
                   "errored": 0, "timeout": 0, "status_2xx": 20000, "data_bytes": 2320000}
    h2load.check(got, 20000, ANSWER)  # every call answered with a whole message
    short = h2load.parse(REAL_RUN.replace("finished in 1.88s", "finished in 850.5ms"))
    assert short["seconds"] == pytest.approx(0.8505)


def test_a_refused_call_fails_the_run_though_h2load_counts_it_a_success() -> None:
    # One call refused by the service: HTTP 200, its status in the trailers, no message.
    refused = h2load.parse(REAL_RUN.replace("(2320000) data", f"({2320000 - ANSWER - 5}) data"))
    with pytest.raises(BenchError, match="2319884 bytes, not 2320000"):
        h2load.check(refused, 20000, ANSWER)
    with pytest.raises(BenchError, match="19999 of 20000 calls succeeded"):
        h2load.check(h2load.parse(REAL_RUN.replace("20000 succeeded, 0 failed", "19999 succeeded, 1 failed")),
                     20000, ANSWER)
    with pytest.raises(BenchError, match="no status line"):
        h2load.parse(REAL_RUN.replace("status codes", "codes"))


def test_latencies_come_from_the_request_log_and_the_body_is_one_grpc_message() -> None:
    log = "1796621862027721\t200\t5652\n1796621862027617\t200\t195\n\n1796621864027587\t200\t10680\n"
    assert h2load.latencies_ms(log) == [0.195, 5.652, 10.68]
    assert h2load.frame(b"") == b"\x00\x00\x00\x00\x00"
    assert h2load.frame(b"ab") == b"\x00\x00\x00\x00\x02ab"


def test_without_h2load_the_phase_says_what_to_install_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert h2load.find() is None
    with pytest.raises(BenchError, match=r"h2load is not installed \(Debian: apt install nghttp2-client\)"):
        workersphase.measure(tmp_path, seconds=1, warmup=1, rounds=1, in_flight=64, answer_slack=1,
                             progress=print, load="h2load")
    with pytest.raises(BenchError, match="unknown load 'wrk'"):
        workersphase.measure(tmp_path, seconds=1, warmup=1, rounds=1, in_flight=64, answer_slack=1,
                             progress=print, load="wrk")
    assert not (tmp_path / "workers-phase.log").exists()  # no service was started


def test_the_workers_table_names_h2load_and_what_one_process_leaves() -> None:
    def row(count: int, qps: float, server: float, split: list[float]) -> dict:
        return {"workers": count, "round": 1, "qps": qps, "p50_ms": 5.0, "p99_ms": 12.0, "starved": 0,
                "server_cpu": server, "client_cpu": 0.22, "other_cpu": 0.0, "server_us_per_call": server / qps * 1e6,
                "client_us_per_call": 0.22 / qps * 1e6, "process_cpu": split}

    two, one = row(2, 9751.0, 1.66, [0.0, 0.83, 0.83]), row(1, 9721.0, 1.31, [1.31])
    lines = report._workers_table({
        "load": "h2load", "connections": 8, "generators": 2, "channels_per_generator": 4, "in_flight": 64,
        "cpus": 2, "ratio": 1.0, "starved_windows": 0, "workers_2": two, "workers_1": one, "rounds": [two, one],
    })
    assert lines[0].startswith("GetSmtp with every core (h2load, 8 connections)")
    assert any("one process used 1.31 cores" in line and "at most 1.53x its QPS" in line for line in lines)
    assert lines[-1].endswith("83% + 83%")
