"""`workers = N`: one supervisor and N worker processes of `smtpconfig serve` on the same port, each
a full replica, all real processes.

Which worker answered a call is read from the workers' own metrics endpoints (worker i serves them
on metrics port + i): a call moves exactly one worker's counter. A channel made with a subchannel
pool of its own is one TCP connection, which the kernel gives to one worker for its lifetime.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from smtpconfig import settings as settings_mod
from smtpconfig.settings import Settings
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.etcd import EtcdCluster, new_prefix, write_key_file
from tests.kits.metrics import moved, scrape
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerProcess, TokenAuth, free_port, short_dir, wait_until

GET = {"method": "v2.ConfigService/GetSmtp", "code": "OK"}
CALLS = "smtpconfig_rpc_requests_total"


class Workers(ServerProcess):
    """`smtpconfig serve --workers N` on a fixed TCP port, each worker's metrics on metrics + i."""

    def __init__(self, data_dir: Path, count: int = 2, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.metrics = free_port()
        while not _free(self.metrics + count - 1):
            self.metrics = free_port()
        super().__init__(data_dir, "--workers", str(count), "--metrics-listen", f"127.0.0.1:{self.metrics}", *extra,
                         env=env)
        self.args[self.args.index("127.0.0.1:0")] = f"127.0.0.1:{self.port}"
        self.count = count

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Workers:
        super().start()
        wait_until(lambda: f"{self.count} workers serving" in self.log(), timeout=60)
        return self

    def pids(self) -> list[int]:
        """The live workers' pids, by the supervisor's children."""
        assert self.proc is not None
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return sorted(int(pid) for pid in found)

    def connection(self) -> grpc.Channel:
        """A new TCP connection (a subchannel pool of its own) that calls as the admin."""
        base = grpc.insecure_channel(self.tcp, options=[("grpc.use_local_subchannel_pool", 1)])
        return grpc.intercept_channel(base, TokenAuth(self.token))

    def worker_of(self, channel: grpc.Channel) -> int:
        """Which worker serves `channel`: the one whose GetSmtp count one call moves."""
        before = [scrape(self.metrics + i)[1] for i in range(self.count)]
        v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=10)
        after = [scrape(self.metrics + i)[1] for i in range(self.count)]
        moves = [moved(b, a, CALLS, **GET) for b, a in zip(before, after, strict=True)]
        assert sorted(moves) == [0.0] * (self.count - 1) + [1.0], moves
        return moves.index(1.0)

    def connection_to(self, index: int) -> grpc.Channel:
        for _ in range(64):
            channel = self.connection()
            if self.worker_of(channel) == index:
                return channel
            channel.close()
        raise AssertionError(f"no connection reached worker {index} in 64 tries")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _update(channel: grpc.Channel, name: str, etag: str = "") -> v2.UpdateSmtpResponse:
    profile = v2_profile(edit(BASIC_V2, SenderName=name))
    return v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=profile, etag=etag), timeout=15)


def _get(channel: grpc.Channel) -> v2.GetSmtpResponse:
    return v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=10)


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    data_dir = short_dir("wk") / "d"
    server = Workers(data_dir).start()
    try:
        with server.connection() as channel:
            _update(channel, "first")
        yield server
    finally:
        server.terminate()


def test_both_workers_answer_and_each_reads_what_the_other_acknowledged(workers: Workers) -> None:
    assert len(workers.pids()) == 2
    seen = set()
    for i in range(12):
        # A write through one connection is what the next connection reads, whichever worker it
        # reaches: a worker takes up the others' acknowledged writes before reading the profile.
        with workers.connection() as writer, workers.connection() as reader:
            written = _update(writer, f"name {i}")
            assert _get(reader).etag == written.etag
            seen.add(workers.worker_of(reader))
    assert seen == {0, 1}


def test_a_watch_on_one_worker_sees_an_update_made_through_the_other(workers: Workers) -> None:
    for watcher_index, writer_index in ((0, 1), (1, 0)):
        with workers.connection_to(watcher_index) as watched, workers.connection_to(writer_index) as writer:
            stream = v2_grpc.ConfigServiceStub(watched).WatchSmtp(v2.WatchSmtpRequest(), timeout=30)
            snapshot = next(stream)
            assert snapshot.kind == v2.WatchSmtpEvent.KIND_SNAPSHOT
            written = _update(writer, f"from worker {writer_index}")
            started = time.monotonic()
            event = next(e for e in stream if e.kind != v2.WatchSmtpEvent.KIND_PROGRESS)
            delay = time.monotonic() - started
            stream.cancel()
            assert event.kind == v2.WatchSmtpEvent.KIND_CHANGE
            assert (event.etag, event.profile.sender_name) == (written.etag, f"from worker {writer_index}")
            assert delay < 2.0


def _race(channels: tuple[grpc.Channel, ...], etag: str, name: str) -> list[object]:
    """UpdateSmtp with `etag` through each channel at once: each one's answer or status code."""
    results: list[object] = [None] * len(channels)
    barrier = threading.Barrier(len(channels))

    def write(index: int) -> None:
        barrier.wait()
        try:
            results[index] = _update(channels[index], f"{name} by {index}", etag=etag)
        except grpc.RpcError as error:
            results[index] = error.code()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(channels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_updates_with_one_etag_through_two_workers_one_wins(workers: Workers) -> None:
    with workers.connection_to(0) as first, workers.connection_to(1) as second:
        for round_ in range(5):
            results = _race((first, second), _get(first).etag, f"round {round_}")
            wins = [r for r in results if isinstance(r, v2.UpdateSmtpResponse)]
            losses = [r for r in results if not isinstance(r, v2.UpdateSmtpResponse)]
            assert len(wins) == 1 and losses == [grpc.StatusCode.ABORTED], results
            assert _get(second).etag == _get(first).etag == wins[0].etag


def test_each_worker_writes_its_own_audit_log_and_verify_checks_them_all(workers: Workers) -> None:
    audit = workers.data_dir / "audit"
    logs = sorted(p.name for p in audit.glob("*.jsonl"))
    assert len(logs) == 2 and logs[0].endswith("-w0.jsonl") and logs[1].endswith("-w1.jsonl"), logs
    done = subprocess.run([sys.executable, "-m", "smtpconfig.cli", "audit", "verify", "--dir", str(audit)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in logs:
        assert name.removesuffix(".jsonl") in done.stdout


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_the_supervisor_is_small_and_each_worker_stays_under_80_mib(workers: Workers) -> None:
    assert workers.proc is not None
    assert _rss_mib(workers.proc.pid) < 30, "the supervisor imports neither grpc nor the service"
    for pid in workers.pids():
        assert _rss_mib(pid) <= 80


def test_a_killed_worker_is_started_again_and_acknowledged_writes_survive() -> None:
    server = Workers(short_dir("wk") / "d").start()
    try:
        with server.connection() as channel:
            written = _update(channel, "before the kill")
        victim = server.pids()[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: re.search(rf"pid {victim}\) ended \(killed by signal 9\)", server.log()), timeout=10)
        wait_until(lambda: len(server.pids()) == 2 and victim not in server.pids(), timeout=10)
        wait_until(lambda: server.log().count("smtpconfig serving on") == 3, timeout=30)
        with server.connection_to(1) as again:  # the new worker 1 answers, with what was written
            assert _get(again).etag == written.etag
            _update(again, "after the kill")
        assert server.proc is not None and server.proc.poll() is None
    finally:
        assert server.terminate() == 0


def test_sigterm_stops_every_worker() -> None:
    server = Workers(short_dir("wk") / "d").start()
    pids = server.pids()
    assert len(pids) == 2
    assert server.terminate() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopping 2 workers" in server.log()
    assert not (server.data_dir / "smtpconfig.sock").exists()


def test_a_second_server_on_the_same_data_directory_is_still_refused(workers: Workers) -> None:
    for count in ("2", "1"):
        done = subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(workers.data_dir),
             "--listen", "127.0.0.1:0", "--unix-socket", "", "--workers", count],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0
        assert "in use by another smtpconfig server" in done.stderr


def test_a_port_another_program_holds_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(tmp_path / "d"),
             "--listen", f"127.0.0.1:{port}", "--workers", "2"],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}: the port is in use" in done.stderr
    assert not (tmp_path / "d").exists(), "a failed start leaves no data directory behind"


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_message(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0", "--unix-socket", str(tmp_path / "missing" / "s.sock"), "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("cannot start: the directory of unix_socket") == 1, done.stderr
    assert time.monotonic() - started < 20
    assert not (tmp_path / "d").exists()


def test_workers_on_etcd_serve_and_watch(etcd_cluster: EtcdCluster) -> None:
    shared = short_dir("key")
    env = {
        "SMTPCONFIG_STORE": "etcd", "SMTPCONFIG_ETCD_ENDPOINTS": etcd_cluster.endpoints,
        "SMTPCONFIG_ETCD_PREFIX": new_prefix(), "SMTPCONFIG_KEY_FILE": str(write_key_file(shared)),
    }
    server = Workers(short_dir("wk") / "d", 2, env=env).start()
    try:
        with server.connection() as channel:
            _update(channel, "first")
        with server.connection_to(0) as watched, server.connection_to(1) as writer:
            stream = v2_grpc.ConfigServiceStub(watched).WatchSmtp(v2.WatchSmtpRequest(), timeout=30)
            assert next(stream).kind == v2.WatchSmtpEvent.KIND_SNAPSHOT
            written = _update(writer, "through etcd")
            event = next(e for e in stream if e.kind != v2.WatchSmtpEvent.KIND_PROGRESS)
            stream.cancel()
            assert (event.kind, event.etag) == (v2.WatchSmtpEvent.KIND_CHANGE, written.etag)
        assert not (server.data_dir / "store.lock").exists(), "etcd: no SQLite lock is taken"
    finally:
        assert server.terminate() == 0


def test_the_workers_setting_defaults_to_one_per_core_but_one_for_an_edge() -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings().processes == cores
    assert Settings(store="etcd").processes == cores
    assert Settings(workers=3).processes == 3
    assert Settings(workers=1).processes == 1
    assert Settings(upstream=("127.0.0.1:2587",)).processes == 1, "an edge is a small sidecar"
    assert Settings(upstream=("127.0.0.1:2587",), workers=2).processes == 2, "an explicit value is honoured"
    assert Settings(listen=()).processes == 1, "the Unix socket alone is served by one process"
    assert settings_mod.load(env={"SMTPCONFIG_WORKERS": "4"}).workers == 4
    with pytest.raises(settings_mod.SettingsError, match="workers = 2 needs a TCP listen address"):
        settings_mod.load(flags={"workers": "2", "listen": []}, env={})
    with pytest.raises(settings_mod.SettingsError, match="between 0"):
        settings_mod.load(env={"SMTPCONFIG_WORKERS": "-1"})


# --- two stores on one file, as two workers hold them -----------------------------------------------


def test_shared_stores_see_each_others_changes_in_order_and_resync_past_the_history(tmp_path: Path) -> None:
    from smtpconfig.store import lock as store_lock
    from smtpconfig.store.base import Change, Resync
    from smtpconfig.store.sqlite import SqliteStore

    async def scenario() -> None:
        held = store_lock.take(tmp_path)  # the supervisor's lock, handed to both "workers"
        try:
            a = await SqliteStore.open(tmp_path, history_keep=3, lock_fd=held)
            b = await SqliteStore.open(tmp_path, history_keep=3, lock_fd=held)
            with pytest.raises(Exception, match="in use by another smtpconfig server"):
                await SqliteStore.open(tmp_path)  # an unrelated server still cannot
            try:
                changes = b.watch("k/")
                first = asyncio.ensure_future(changes.__anext__())
                await asyncio.sleep(0)
                written = [await a.put(f"k/{i}", b"v") for i in range(3)]
                got = [await first] + [await asyncio.wait_for(changes.__anext__(), 5) for _ in range(2)]
                assert [c.at for c in got if isinstance(c, Change)] == [w.revision for w in written]
                # b's own write comes after a's, in revision order, with a revision above them.
                own = await b.put("k/b", b"w")
                assert own.revision == written[-1].revision + 1
                assert (await asyncio.wait_for(changes.__anext__(), 5)).at == own.revision
                # b stops looking; a writes more than the history keeps: b's watcher resyncs.
                assert b._follower is not None
                b._follower.cancel()
                for i in range(6):
                    await a.put("k/x", str(i).encode())
                assert b.settle()[0] == Resync(await a.revision())
                assert isinstance(await asyncio.wait_for(changes.__anext__(), 5), Resync)
                await changes.aclose()
            finally:
                await a.close()
                await b.close()
        finally:
            os.close(held)

    asyncio.run(scenario())
