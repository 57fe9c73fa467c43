"""`python -m bench.profile`: perf's samples grouped by thread and code, scaled to µs per call.

perf itself is not part of the test setup (it needs the kernel's matching tools), so these tests
feed the parser what `perf report` prints and run the rest on it; a missing perf is a clear error."""

from __future__ import annotations

import os

import pytest

from bench import BenchError, profile

# `perf report --sort pid,dso -F sample,pid,dso --field-separator ;` of server 2572 (trimmed).
REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 9K of event 'cpu-clock:ppp'
#
2498       ;   2572:python      ;[kernel.kallsyms]
20         ;   2572:python      ;[vdso]
52         ;   2572:python      ;_asyncio.cpython-311-x86_64-linux-gnu.so
5          ;   2572:python      ;_hashlib.cpython-311-x86_64-linux-gnu.so
18         ;   2572:python      ;_message.abi3.so
844        ;   2572:python      ;cygrpc.cpython-311-x86_64-linux-gnu.so
199        ;   2572:python      ;libc.so.6
1431       ;   2572:python      ;libpython3.11.so.1.0
130        ;   2572:python      ;loop.cpython-311-x86_64-linux-gnu.so
1556       ;   2585:python      ;[kernel.kallsyms]
66         ;   2585:python      ;libc.so.6
563        ;   2588:event_engine;[kernel.kallsyms]
162        ;   2588:event_engine;cygrpc.cpython-311-x86_64-linux-gnu.so
0          ;   2588:event_engine;[unknown]
900        ;   2600:python      ;libpython3.11.so.1.0
410        ;      0:swapper     ;[kernel.kallsyms]
"""
# The server's threads; 2600 is the load generator's and 0 the idle task, recorded machine-wide.
TIDS = {2572, 2585, 2588}


def test_binaries_fall_into_their_groups() -> None:
    assert profile.code_of("[kernel.kallsyms]") == profile.code_of("[vdso]") == "kernel"
    assert profile.code_of("libpython3.11.so.1.0") == profile.code_of("/usr/bin/python3.11") == "Python interpreter"
    assert profile.code_of("cygrpc.cpython-311-x86_64-linux-gnu.so") == "grpcio"
    assert profile.code_of("loop.cpython-311-x86_64-linux-gnu.so") == "event loop library"
    assert profile.code_of("_asyncio.cpython-311-x86_64-linux-gnu.so") == "event loop library"
    assert profile.code_of("_message.abi3.so") == "protobuf"
    assert profile.code_of("libc.so.6") == profile.code_of("ld-linux-x86-64.so.2") == "C runtime"
    assert profile.code_of("libcrypto.so.3") == profile.code_of("[unknown]") == "other"


def test_threads_are_the_loop_grpcio_s_core_and_the_rest() -> None:
    assert profile.thread_of(2572, 2572, "python") == "event loop"
    assert profile.thread_of(2572, 2588, "event_engine") == "grpcio C-core threads"
    assert profile.thread_of(2572, 2585, "python") == "other threads"


def test_the_report_is_summed_by_thread_and_code() -> None:
    samples = profile.parse_report(REPORT, 2572, TIDS)
    assert samples[("event loop", "kernel")] == 2498 + 20
    assert samples[("event loop", "Python interpreter")] == 1431
    assert samples[("event loop", "grpcio")] == 844
    assert samples[("event loop", "event loop library")] == 52 + 130
    assert samples[("event loop", "other")] == 5
    assert samples[("other threads", "kernel")] == 1556
    assert samples[("grpcio C-core threads", "grpcio")] == 162
    assert sum(samples.values()) == 7544


def test_per_call_figures_add_up_to_the_cpu_per_call_from_proc() -> None:
    table = profile.per_call(profile.parse_report(REPORT, 2572, TIDS), 150.0)
    assert set(table) == set(profile.THREADS)
    assert sum(sum(codes.values()) for codes in table.values()) == pytest.approx(150.0)
    assert table["event loop"]["Python interpreter"] == pytest.approx(1431 / 7544 * 150.0)
    with pytest.raises(BenchError, match="no samples"):
        profile.per_call({}, 150.0)


def _run(qps: float, us: float, python: float) -> dict:
    groups = {thread: dict.fromkeys(profile.CODE, 0.0) for thread in profile.THREADS}
    groups["event loop"]["Python interpreter"] = python
    groups["event loop"]["kernel"] = us - python
    return {"qps": qps, "server_us_per_call": us, "loop_us_per_call": us, "client_us_per_call": 80.0,
            "switches_per_call": 10.0, "samples": 1000, "groups": groups}


def test_the_table_shows_both_servers_and_the_difference() -> None:
    result = {
        "settings": {"in_flight": 64, "seconds": 3, "warmup": 1, "rounds": 3, "frequency": 999, "event_loop": "uvloop"},
        "methods": {"GetSmtp": {
            "bare": profile._median([_run(9000, 110, 10), _run(9400, 120, 12), _run(8000, 100, 30)]),
            "service": profile._median([_run(7000, 150, 20), _run(7200, 160, 25), _run(6000, 170, 24)]),
        }},
    }
    text = profile.render(result)
    assert "GetSmtp: 7000 QPS against bare grpc.aio 9000 (0.78)" in text
    assert "| event loop | Python interpreter | 12.0 | 24.0 | +12.0 |" in text
    assert "| all | all (/proc) | 110.0 | 160.0 | +50.0 |" in text
    assert "| grpcio C-core threads |" in text and "| grpcio C-core threads | kernel |" not in text  # all zero


def test_without_perf_it_says_what_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchError, match="perf is not installed"):
        profile.check_perf()
    assert profile.main(["--methods", "GetSmtp", "--rounds", "1"]) == 1


def test_bad_arguments_are_refused(capsys) -> None:
    for argv in (["--methods", "GetSmtp,Nope"], ["--rounds", "0"], ["--seconds", "0"]):
        with pytest.raises(SystemExit):
            profile.parse_args(argv)
    assert "Nope" in capsys.readouterr().err


def test_context_switches_are_counted_over_every_thread() -> None:
    assert profile.context_switches(os.getpid()) > 0
