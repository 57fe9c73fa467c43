"""Each replica's own audit log: JSON lines, hash-chained, rotated by size, mode 0600, written before
the answer and fail-closed, checked offline by `smtpconfig audit verify`.

The log is driven directly (`AuditFile`) for the chain and rotation, and through real servers for
the rest: a server process killed with kill -9 right after its answers, a server whose audit
directory is a 64 KiB tmpfs filled for real (tests/kits/tinydisk.py), and the standard output copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckResponse

from smtpconfig.cli import main as cli
from smtpconfig.ops.audit import AuditLog, AuditRecord, Cursor, encode
from smtpconfig.ops.audit_file import GENESIS, RESUMED, AuditFile, Fields, line_hash, log_files, record_doc, record_line
from smtpconfig.settings import Settings
from smtpconfig.store.sqlite import SqliteStore
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.calls import list_records, rid
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerProcess, short_dir, wait_until
from tests.kits.tinydisk import TinyDiskServer, health

REPLICA = "r1"
PLANTED = "PLANTED-audit-file-inline-4e7a"
SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING


def _write(
    directory: Path, count: int, *, max_bytes: int = 1 << 20, keep_files: int = 10, start: int = 0, fsync: str = "batch",
) -> None:
    async def scenario() -> None:
        log = await AuditFile.open(directory, REPLICA, max_bytes=max_bytes, keep_files=keep_files, fsync=fsync,
                                   stdout=None, on_health=lambda ok: None)
        try:
            await asyncio.gather(*(
                log.append(Fields(time.time_ns() // 1000, "alice", "v2.ConfigService/ResolveSmtp", f"req-{start + n}",
                                  "OK", ("RelayPassword",), 1, f"record {start + n}"))
                for n in range(count)))
        finally:
            await log.close()

    asyncio.run(scenario())


def _verify(directory: Path, capsys) -> tuple[int, str]:
    code = cli.main(["audit", "verify", "--dir", str(directory)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Path]:
    """An audit directory holding 20 chained records of replica r1."""
    directory = tmp_path / "audit"
    _write(directory, 20)
    yield directory


# --- the chain ------------------------------------------------------------------------------------



def test_a_record_line_is_the_json_of_its_record() -> None:
    """The line is built by hand for speed; it must be exactly what the json module makes of the
    record's object, whatever the text holds."""
    awkward = ['plain', 'quote " and backslash \\', "new\nline\ttab\x00nul\x1f", "ünïcödé ✓ 😀", "\u202eflip", ""]
    for text in awkward:
        record = Fields(1_765_000_000_123_456, text, f"v2.X/{text}", text, "OK", (text, "RelayPassword"), 7, text)
        prev = "ab" * 32
        expected = {**record_doc("replica-1", 42, record), "prev": prev}
        line = record_line("replica-1", 42, record, prev)
        assert line == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode(), text
        assert json.loads(line) == expected

def test_records_are_chained_json_lines_and_verify_counts_them(logged: Path, capsys) -> None:
    lines = (logged / f"{REPLICA}.jsonl").read_bytes().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["seq"] for d in docs] == list(range(1, 21))
    assert docs[0]["prev"] == GENESIS
    assert all(docs[n + 1]["prev"] == line_hash(lines[n]) for n in range(19))
    assert {d["replica"] for d in docs} == {REPLICA} and docs[0]["method"] == "v2.ConfigService/ResolveSmtp"
    assert docs[0]["time"].endswith("Z") and docs[0]["fields"] == ["RelayPassword"]
    assert _verify(logged, capsys) == (0, f"{REPLICA}: 20 records in 1 files, the chain is intact\n")


def _lines(directory: Path) -> tuple[Path, list[bytes]]:
    path = directory / f"{REPLICA}.jsonl"
    return path, path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(("damage", "line", "problem"), [
    ("deleted", 8, "does not chain to the line before it"),
    ("edited", 9, "does not chain to the line before it"),
    ("reordered", 8, "does not chain to the line before it"),
    ("truncated", 20, "the last line is cut off"),
    ("not json", 8, "not a JSON record"),
])
def test_verify_names_the_first_broken_link(logged: Path, capsys, damage: str, line: int, problem: str) -> None:
    path, lines = _lines(logged)
    if damage == "deleted":
        del lines[7]
    elif damage == "edited":  # an outcome turned from OK into something else, the line kept valid JSON
        lines[7] = lines[7].replace(b'"outcome":"OK"', b'"outcome":"PERMISSION_DENIED"')
    elif damage == "reordered":
        lines[7], lines[8] = lines[8], lines[7]
    elif damage == "truncated":
        lines[-1] = lines[-1][:30]
    else:
        lines[7] = b"garbage\n"
    path.write_bytes(b"".join(lines))
    code, out = _verify(logged, capsys)
    assert code == 1, out
    assert f"BROKEN at {path}:{line}: " in out and problem in out, out


def test_a_reopened_log_continues_the_chain(logged: Path, capsys) -> None:
    _write(logged, 5, start=20)
    docs = [json.loads(line) for line in _lines(logged)[1]]
    assert [d["seq"] for d in docs] == list(range(1, 26))
    assert _verify(logged, capsys)[0] == 0


@pytest.mark.parametrize("fsync", ["batch", "interval"])  # groups on the writer thread; one record at a time
def test_rotation_keeps_the_chain_across_files_and_drops_the_oldest(tmp_path: Path, capsys, fsync: str) -> None:
    directory = tmp_path / "audit"
    for batch in range(6):  # groups of 20 records of ~300 bytes: a new file every group or so
        _write(directory, 20, max_bytes=4096, keep_files=100, start=batch * 20, fsync=fsync)
    files = log_files(directory, REPLICA)
    assert len(files) >= 4 and files[-1].name == f"{REPLICA}.jsonl"
    assert all(f.name.startswith(f"{REPLICA}.0000") for f in files[:-1])
    code, out = _verify(directory, capsys)
    assert (code, out) == (0, f"{REPLICA}: 120 records in {len(files)} files, the chain is intact\n")
    # Each file's first record chains to the last one of the file before it.
    for older, newer in zip(files, files[1:], strict=False):
        last = older.read_bytes().splitlines()[-1]
        assert json.loads(newer.read_bytes().splitlines()[0])["prev"] == line_hash(last)

    # A rotated file removed from the middle breaks the chain; the oldest removed is rotation.
    middle = files[1].read_bytes()
    files[1].unlink()
    code, out = _verify(directory, capsys)
    assert code == 1 and f"BROKEN at {files[2]}:1: " in out, out
    files[1].write_bytes(middle)
    files[0].unlink()
    code, out = _verify(directory, capsys)
    assert code == 0 and "older files were rotated away" in out, out

    # audit_keep_files: the writer itself drops the oldest files beyond it.
    _write(directory, 60, max_bytes=4096, keep_files=2, start=120, fsync=fsync)
    assert len(log_files(directory, REPLICA)) == 3
    assert _verify(directory, capsys)[0] == 0


def test_the_log_is_0600_in_a_0700_directory_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        _write(tmp_path / "audit", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    for path in (tmp_path / "audit").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_one_process_writes_a_replica_log_at_a_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        options = dict(max_bytes=1 << 20, keep_files=1, fsync="interval", stdout=None, on_health=lambda ok: None)
        first = await AuditFile.open(tmp_path, REPLICA, **options)
        try:
            with pytest.raises(Exception, match="in use by another server.*replica_name"):
                await AuditFile.open(tmp_path, REPLICA, **options)
        finally:
            await first.close()

    asyncio.run(scenario())


def test_verify_without_a_log_says_so(tmp_path: Path, capsys) -> None:
    assert cli.main(["audit", "verify", "--dir", str(tmp_path)]) == 1
    assert "no audit log" in capsys.readouterr().err
    assert cli.main(["audit", "verify", "--dir", str(tmp_path / "missing")]) == 2


def test_the_default_replica_name_is_the_host_and_a_fixed_port() -> None:
    host = Settings(listen=("127.0.0.1:2587",)).replica
    assert host.endswith("-2587") and len(host) > 5
    assert Settings(listen=("127.0.0.1:0",)).replica == host[: -len("-2587")]
    assert Settings(replica_name="web-1").replica == "web-1"


# --- through a server -----------------------------------------------------------------------------


def _check(channel: grpc.Channel, request_id: str, value: str = PLANTED) -> pb.CheckSecretResponse:
    return pb_grpc.SecretProviderServiceStub(channel).CheckSecret(
        pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=value)),
        metadata=[("x-request-id", request_id)], timeout=10)


@pytest.mark.parametrize("fsync", ["interval", "batch"])
def test_kill_9_right_after_answers_loses_no_record(fsync: str, capsys) -> None:
    data_dir = short_dir("ak") / "data"
    server = ServerProcess(data_dir, env={"SMTPCONFIG_AUDIT_FSYNC": fsync}).start()
    try:
        with server.channel() as channel:
            ids = [rid("kill") for _ in range(300)]
            with ThreadPoolExecutor(max_workers=32) as pool:
                list(pool.map(lambda request_id: _check(channel, request_id, "v"), ids))
        server.kill9()  # straight after the last answer
        audit = data_dir / "audit"
        written = b"".join(path.read_bytes() for path in log_files(audit, Settings(listen=("127.0.0.1:0",)).replica))
        found = {json.loads(line)["request_id"] for line in written.splitlines()}
        assert set(ids) <= found
        code, out = _verify(audit, capsys)
        assert code == 0, out
    finally:
        server.terminate()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_a_full_audit_disk_refuses_answers_until_there_is_room_again(capsys) -> None:
    base = short_dir("af")
    interval = 0.2
    server = TinyDiskServer(base, "64k", tiny="audit", env={"SMTPCONFIG_READINESS_INTERVAL": str(interval)}).start()
    audit = server.data_dir / "audit"
    try:
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            stored = stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
            before = rid("before")
            _check(channel, before)
            wait_until(lambda: health(server.target, "smtpconfig.audit") == SERVING, timeout=5)

            server.fill()
            # The log's last page (4 KiB) may still have room: answered until it is full.
            for _ in range(40):
                try:
                    _check(channel, rid("filling"))
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                    break
            else:
                raise AssertionError("40 records fitted on a full disk")
            refused = [rid("full") for _ in range(3)]
            for request_id in refused:
                with pytest.raises(grpc.RpcError) as failure:
                    _check(channel, request_id)
                assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
                assert failure.value.details().startswith("the audit log cannot be written: the disk is full (ENOSPC)")
                assert PLANTED not in failure.value.details()
            with pytest.raises(grpc.RpcError) as failure:
                stub.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value.details()
            # Readiness says so under its own name; reads and changes (recorded in the store) go on.
            assert health(server.target, "smtpconfig.audit") == NOT_SERVING
            assert health(server.target) == SERVING
            assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=10).etag == stored.etag
            changed = stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=2526))), timeout=10)
            # A refusal still goes out as the refusal it is, its record lost and logged.
            with pytest.raises(grpc.RpcError) as failure:
                stub.ResolveSmtp(v2.ResolveSmtpRequest(), metadata=[("authorization", "Bearer nobody")], timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "the audit log" in server.log() and "ENOSPC" in server.log()

            server.free()  # no call needed: the readiness tick finds out
            wait_until(lambda: health(server.target, "smtpconfig.audit") == SERVING, timeout=10 * interval + 3)
            after = rid("after")
            _check(channel, after)
            records = list_records(channel, server.token)
        text = server.read(audit / f"{Settings(listen=('127.0.0.1:0',)).replica}.jsonl")
    finally:
        assert server.terminate() == 0, server.log()
        shutil.rmtree(base, ignore_errors=True)

    docs = [json.loads(line) for line in text.splitlines()]
    ids = [d["request_id"] for d in docs]
    assert before in ids and after in ids and not set(refused) & set(ids)
    assert not [d for d in docs if d["outcome"] != "OK" and d["request_id"].startswith("filling")]
    resumed = [d for d in docs if d["method"] == RESUMED]
    assert len(resumed) == 1 and "records were refused" in resumed[0]["message"] and "ENOSPC" in resumed[0]["message"]
    # The chain held through the failed writes (each cut back to the last whole line).
    assert all(docs[n + 1]["prev"] == line_hash(text.splitlines()[n]) for n in range(len(docs) - 1))
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
    assert PLANTED.encode() not in text
    listed = {r.request_id: r.change for r in records}
    assert listed[before] is False and listed[after] is False and changed.etag


def test_every_record_is_copied_to_standard_output_when_asked() -> None:
    data_dir = short_dir("ao") / "data"
    server = ServerProcess(data_dir, env={"SMTPCONFIG_AUDIT_STDOUT": "true"}).start()
    try:
        with server.channel() as channel:
            update, check = rid("out-update"), rid("out-check")
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(
                BASIC_V2, RelayPassword={"SecretValue": PLANTED}))), metadata=[("x-request-id", update)], timeout=10)
            _check(channel, check)
        assert server.terminate() == 0
        printed = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    finally:
        server.terminate()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    by_id = {doc["request_id"]: doc for doc in printed}
    assert by_id[update]["change"] is True and by_id[update]["method"] == "v2.ConfigService/UpdateSmtp"
    assert "RelayPassword" in by_id[update]["fields"]
    assert by_id[check]["method"] == "v2.SecretProviderService/CheckSecret" and len(by_id[check]["prev"]) == 64
    assert PLANTED not in json.dumps(printed)


def test_the_trail_lists_store_and_log_records_in_time_order_from_a_time_on(tmp_path: Path) -> None:
    """`AuditLog.read` over a real store and log: both kinds interleaved by time, `since` applied to
    both, and a cursor that resumes each where the page left it."""
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "data")
        log = await AuditFile.open(tmp_path / "data" / "audit", REPLICA, max_bytes=1 << 20, keep_files=2,
                                   fsync="interval", stdout=None, on_health=lambda ok: None)
        audit = AuditLog(store, log)
        try:
            start = datetime.now(UTC) - timedelta(minutes=10)
            order = []
            for n in range(12):
                at = start + timedelta(seconds=n)
                if n % 4 == 0:
                    await store.put(f"k{n}", b"v", audit=AuditRecord(at, "alice", "m", f"r{n}", "OK").entry())
                elif n % 4 == 1:  # the form callers made when every record went to the store
                    await audit.append_entry(encode("bob", "m", f"r{n}", "x", at=int(at.timestamp() * 1e6)), "OK")
                else:
                    await audit.append(AuditRecord(at, "carol", "m", f"r{n}", "OK"))
                order.append(f"r{n}")
            records, cursor, more = await audit.read(limit=1000)
            assert [r.request_id for r in records] == order and not more
            assert [r.change for r in records] == [n % 4 == 0 for n in range(12)]
            assert {r.outcome for r in records} == {"OK"}

            pages, after = [], Cursor()
            while True:
                page, after, more = await audit.read(after=after, limit=5)
                pages.append([r.request_id for r in page])
                if not more:
                    break
            assert [i for p in pages for i in p] == order and max(map(len, pages)) == 5
            assert Cursor.parse(after.token()) == after

            recent, _, _ = await audit.read(since=start + timedelta(seconds=6), limit=1000)
            assert [r.request_id for r in recent] == order[6:]
        finally:
            await audit.close()
            await store.close()

    asyncio.run(scenario())
