"""When the store cannot take a write, callers hear UNAVAILABLE (try again), never INTERNAL, and
nothing half-done is kept.

The store is made unwritable the way it happens for real, from outside the server: another
process holds the database's write lock (`BEGIN IMMEDIATE`, left open), so writes wait out
SQLite's 5 s busy timeout; or another connection moves the audit table aside, so every change
(whose record goes in that table, in the change's transaction) fails at once, as on a full disk or
an I/O error.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1.health_pb2 import HealthCheckResponse

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.calls import ALICE_TOKEN, CALLERS, CAROL_TOKEN, invoke, list_records, rid
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerThread, short_dir, wait_until
from tests.kits.tinydisk import TinyDiskServer, health

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING


@pytest.fixture
def server() -> Iterator[ServerThread]:
    data_dir = short_dir("se")
    server = ServerThread(data_dir, **CALLERS).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def other_connection(server: ServerThread) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "smtpconfig.db", isolation_level=None, timeout=0)


class LockHolder:
    """Another process holding the write lock of the server's database until the block ends."""

    def __init__(self, database: Path) -> None:
        script = (
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(database)!r}, isolation_level=None, timeout=0)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"  # until the test closes our stdin
            "db.execute('ROLLBACK')\n"
        )
        self._proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)

    def __enter__(self) -> LockHolder:
        assert self._proc.stdout is not None and self._proc.stdout.readline() == "held\n", "the lock was not taken"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        assert self._proc.wait(10) == 0


def port_update(port: int) -> v2.UpdateSmtpRequest:
    return v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=port)),
                                update_mask=field_mask_pb2.FieldMask(paths=["Port"]))


def test_a_write_while_another_process_holds_the_lock_is_unavailable(server: ServerThread, caplog) -> None:
    caplog.set_level(logging.INFO, logger="smtpconfig.api.calls")
    with grpc.insecure_channel(server.target) as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        stored = invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, rid("first"))

        with LockHolder(server.data_dir / "smtpconfig.db"):
            locked = rid("locked")
            started = time.monotonic()
            call = stub.UpdateSmtp.future(port_update(2525), timeout=30, metadata=[
                ("authorization", f"Bearer {ALICE_TOKEN}"), ("x-request-id", locked)])
            # Let go of the lock once the write has been refused, so the refusal's record (which
            # waits for the lock in turn) can be written and read back.
            wait_until(lambda: call.done() or any("refused: UNAVAILABLE" in r.getMessage() for r in caplog.records),
                       timeout=15)
        with pytest.raises(grpc.RpcError) as failure:
            call.result()
        elapsed = time.monotonic() - started
        assert failure.value.code() == UNAVAILABLE, failure.value.details()
        assert "try again" in failure.value.details()
        assert dict(failure.value.trailing_metadata())["x-request-id"] == locked
        assert 4.0 < elapsed < 12.0, f"refused after {elapsed:.1f}s"  # SQLite's busy timeout is 5 s

        after = stub.GetSmtp(v2.GetSmtpRequest(), metadata=[("authorization", f"Bearer {ALICE_TOKEN}")], timeout=10)
        assert (after.etag, after.profile.port) == (stored.etag, BASIC_V2["Port"])  # nothing stored
        outcomes = {r.request_id: (r.identity, r.outcome) for r in list_records(channel, server.token)}
        assert outcomes[locked] == ("alice", "UNAVAILABLE")
        # The same server writes again once the lock is gone.
        invoke(stub.UpdateSmtp, port_update(2526), ALICE_TOKEN, rid("again"))


def test_a_change_whose_record_cannot_be_stored_is_not_stored(server: ServerThread) -> None:
    """Change records share the change's transaction; records of everything else are in the
    replica's own log (tests/test_audit_file.py makes that one fail), so they go on meanwhile."""
    with grpc.insecure_channel(server.target) as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        providers = pb_grpc.SecretProviderServiceStub(channel)
        stored = invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, rid("first"))
        aside = other_connection(server)
        aside.execute("ALTER TABLE audit RENAME TO audit_aside")
        try:
            change = rid("change")
            error = invoke(stub.UpdateSmtp, port_update(2527), ALICE_TOKEN, change, UNAVAILABLE)
            assert "try again" in error.details()
            denied = rid("denied")
            error = invoke(stub.UpdateSmtp, port_update(2525), CAROL_TOKEN, denied, grpc.StatusCode.PERMISSION_DENIED)
            assert "smtp:modify" in error.details()
            check = rid("check")
            invoke(providers.CheckSecret, pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value="v")),
                   ALICE_TOKEN, check)
        finally:
            aside.execute("ALTER TABLE audit_aside RENAME TO audit")
            aside.close()

        after = stub.GetSmtp(v2.GetSmtpRequest(), metadata=[("authorization", f"Bearer {ALICE_TOKEN}")], timeout=10)
        assert (after.etag, after.profile.port) == (stored.etag, BASIC_V2["Port"])
        outcomes = {r.request_id: (r.outcome, r.change) for r in list_records(channel, server.token)}
        # The change's failure is on record (in the log), the change itself is not stored.
        assert outcomes[change] == ("UNAVAILABLE", False)
        assert outcomes[denied] == ("PERMISSION_DENIED", False) and outcomes[check] == ("OK", False)
        # Changes are stored again, with their records, as soon as the table is back.
        later = rid("later")
        invoke(stub.UpdateSmtp, port_update(2528), ALICE_TOKEN, later)
        assert outcomes.get(later) is None
        assert {r.request_id: r.change for r in list_records(channel, server.token)}[later] is True


# --- a full disk, for real ---------------------------------------------------------------------------


DISK_INTERVAL = 0.2


def test_a_full_disk_is_named_turns_readiness_off_and_recovers_without_restart() -> None:
    base = short_dir("df")
    server = TinyDiskServer(base, "2m", env={"SMTPCONFIG_READINESS_INTERVAL": str(DISK_INTERVAL)}).start()
    try:
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            stored = stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
            assert health(server.target) == SERVING

            server.fill()
            with pytest.raises(grpc.RpcError) as failure:
                stub.UpdateSmtp(port_update(2525), timeout=10)
            assert failure.value.code() == UNAVAILABLE, failure.value.details()
            assert "disk is full (SQLITE_FULL)" in failure.value.details()
            assert "rollback" not in failure.value.details() and "no transaction" not in failure.value.details()
            # Readiness notices within a few intervals; reads go on from the store meanwhile.
            wait_until(lambda: health(server.target) == NOT_SERVING, timeout=10 * DISK_INTERVAL + 2)
            time.sleep(3 * DISK_INTERVAL)
            assert health(server.target) == NOT_SERVING  # it stays so while the disk is full
            assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=10).etag == stored.etag
            assert "SQLITE_FULL" in server.log()

            server.free()
            wait_until(lambda: health(server.target) == SERVING, timeout=10 * DISK_INTERVAL + 2)
            changed = stub.UpdateSmtp(port_update(2526), timeout=10)
            assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=10).profile.port == 2526 != stored.profile.port
            assert changed.etag != stored.etag
            # Once writes work again, readiness checks stop writing to find out.
            before = server.written()
            time.sleep(5 * DISK_INTERVAL)
            assert server.written() == before
    finally:
        assert server.terminate() == 0, server.log()
        shutil.rmtree(base, ignore_errors=True)
    # The tmpfs was the server's alone: nothing of it is mounted here, before or after.
    assert str(server.data_dir) not in Path("/proc/self/mounts").read_text()
