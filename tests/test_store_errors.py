"""When the store cannot take a write, callers hear UNAVAILABLE (try again), never INTERNAL, and
nothing half-done is kept; a refusal whose audit record cannot be written still goes out as the
refusal it is.

The store is made unwritable the way it happens for real, from outside the server: another
process holds the database's write lock (`BEGIN IMMEDIATE`, left open), so writes wait out
SQLite's 5 s busy timeout; or another connection moves the audit table aside, so every write to
it fails at once, as on a full disk or an I/O error.
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
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.calls import ALICE_TOKEN, CALLERS, CAROL_TOKEN, invoke, list_records, rid
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerProcess, ServerThread, short_dir, violations, wait_until

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


def test_refusals_stay_what_they_are_when_their_record_cannot_be_written(server: ServerThread, caplog) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        providers = pb_grpc.SecretProviderServiceStub(channel)
        stored = invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, rid("first"))
        aside = other_connection(server)
        aside.execute("ALTER TABLE audit RENAME TO audit_aside")
        try:
            denied = rid("denied")
            error = invoke(stub.UpdateSmtp, port_update(2525), CAROL_TOKEN, denied, grpc.StatusCode.PERMISSION_DENIED)
            assert "smtp:modify" in error.details()
            nobody = rid("nobody")
            invoke(stub.ResolveSmtp, v2.ResolveSmtpRequest(), None, nobody, grpc.StatusCode.UNAUTHENTICATED)
            bad = rid("bad")
            error = invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Host="bad host"))),
                           ALICE_TOKEN, bad, grpc.StatusCode.INVALID_ARGUMENT)
            assert [f for f, _ in violations(error)] == ["Host"]
            # A change is not stored without its record (they share one transaction)...
            change = rid("change")
            error = invoke(stub.UpdateSmtp, port_update(2527), ALICE_TOKEN, change, UNAVAILABLE)
            assert "try again" in error.details()
            # ...and a revealing call is not answered without its record.
            check = rid("check")
            error = invoke(providers.CheckSecret, pb.CheckSecretRequest(
                secret=secret_pb2.SecretObject(secret_value="v")), ALICE_TOKEN, check, UNAVAILABLE)
        finally:
            aside.execute("ALTER TABLE audit_aside RENAME TO audit")
            aside.close()

        after = stub.GetSmtp(v2.GetSmtpRequest(), metadata=[("authorization", f"Bearer {ALICE_TOKEN}")], timeout=10)
        assert (after.etag, after.profile.port) == (stored.etag, BASIC_V2["Port"])
        lost = {denied, nobody, bad, change, check}
        assert not lost & {r.request_id for r in list_records(channel, server.token)}
        # Operators hear of each record that could not be written.
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert sum("audit record of a refused call could not be written" in m for m in errors) == 4
        # The trail is written again as soon as the table is back.
        later = rid("later")
        invoke(stub.UpdateSmtp, port_update(2528), ALICE_TOKEN, later)
        assert later in {r.request_id for r in list_records(channel, server.token)}


# --- a full disk, for real ---------------------------------------------------------------------------


class TinyDiskServer(ServerProcess):
    """`smtpconfig serve` whose data directory is a tmpfs of `size`, mounted in a mount namespace
    made for the server alone (`unshare --mount`): the mount goes away with the server, whatever
    happens to the test. The test reaches into that namespace with `nsenter` to fill the disk and
    free it again; the socket lives outside the tmpfs, where the test can dial it."""

    def __init__(self, base: Path, size: str) -> None:
        data_dir = base / "data"
        data_dir.mkdir()
        super().__init__(data_dir, "--unix-socket", str(base / "s.sock"),
                         env={"SMTPCONFIG_READINESS_INTERVAL": str(DISK_INTERVAL)})
        self.socket = base / "s.sock"
        mount = 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && shift 2 && exec "$@"'
        self.args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", size,
                     str(data_dir), *self.args]

    def inside(self, *command: str) -> subprocess.CompletedProcess:
        """Run `command` in the server's mount namespace, where the tmpfs is."""
        assert self.proc is not None
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--", *command],
                              capture_output=True, text=True, timeout=30)

    @property
    def token(self) -> str:
        return self.inside("cat", str(self.token_path)).stdout.strip()

    def fill(self) -> None:
        """Write a file until the tmpfs has no byte left."""
        filler = self.inside("dd", "if=/dev/zero", f"of={self.data_dir / 'filler'}", "bs=4096")
        assert "No space left on device" in filler.stderr, filler.stderr
        free = self.inside("df", "--output=avail", str(self.data_dir)).stdout.split()[-1]
        assert free == "0", f"{free} KiB still free"

    def free(self) -> None:
        removed = self.inside("rm", str(self.data_dir / "filler"))
        assert removed.returncode == 0, removed.stderr

    def written(self) -> str:
        """Size and modification time of the database and its WAL: they change with every write."""
        files = [str(self.data_dir / name) for name in ("smtpconfig.db", "smtpconfig.db-wal")]
        return self.inside("stat", "--format=%s %y", *files).stdout


DISK_INTERVAL = 0.2


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return HealthStub(channel).Check(HealthCheckRequest(), timeout=5).status


def test_a_full_disk_is_named_turns_readiness_off_and_recovers_without_restart() -> None:
    base = short_dir("df")
    server = TinyDiskServer(base, "2m").start()
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
