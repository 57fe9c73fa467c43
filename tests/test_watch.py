"""WatchSmtp over a real channel to a real server on SQLite: the snapshot, a CHANGE per update,
resuming after a revision (exactly the missed changes, or a RESYNC when the history is gone),
progress on idle streams, the permission, the per-identity stream limit, the age limit, the end
at shutdown, and the two audit records of a stream."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from smtpconfig.domain.profiles import StoredProfile
from smtpconfig.domain.watch import MAX_PENDING, Ended, Progress, Subscription
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.calls import ALICE_TOKEN, CALLERS, CAROL_TOKEN, list_records
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerThread, serving, short_dir, violations

Event = v2.WatchSmtpEvent
PASSWORD = "PLANTED-watch-relay-password-7c1e"
# GetSmtp shows a typed username (it is not password-like), so the password is what must never show.
PLANTED = (PASSWORD, ALICE_TOKEN)
PROFILE = edit(BASIC_V2, RelayPassword={"SecretValue": PASSWORD})


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Stream:
    """A WatchSmtp stream read on a thread, its messages (or its end) in a queue."""

    def __init__(self, channel: grpc.Channel, token: str, after: int = 0) -> None:
        self.call = v2_grpc.ConfigServiceStub(channel).WatchSmtp(
            v2.WatchSmtpRequest(after_revision=after), metadata=_auth(token), timeout=60,
        )
        self.events: queue.Queue[Any] = queue.Queue()
        self.received: list[Event] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as error:
            self.events.put(error)
        else:
            self.events.put(None)

    def next(self, timeout: float = 10.0) -> Event:
        item = self.events.get(timeout=timeout)
        assert isinstance(item, Event), f"the stream ended: {item}"
        self.received.append(item)
        return item

    def next_not_progress(self, timeout: float = 10.0) -> Event:
        while True:
            event = self.next(timeout)
            if event.kind != Event.KIND_PROGRESS:
                return event

    def end(self, timeout: float = 10.0) -> grpc.RpcError:
        while True:
            item = self.events.get(timeout=timeout)
            if isinstance(item, grpc.RpcError):
                return item
            assert item is not None, "the stream ended OK"
            self.received.append(item)

    def cancel(self) -> None:
        self.call.cancel()


def _serve(**settings: Any) -> Iterator[ServerThread]:
    yield from serving(**{**CALLERS, **settings})


@pytest.fixture
def server() -> Iterator[ServerThread]:
    yield from _serve(watch_progress_seconds=0.3)


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def update(channel: grpc.Channel, **changes: Any) -> v2.UpdateSmtpResponse:
    stub = v2_grpc.ConfigServiceStub(channel)
    if not changes:
        return stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(PROFILE)), metadata=_auth(ALICE_TOKEN))
    request = v2.UpdateSmtpRequest(profile=v2_profile(edit(PROFILE, **changes)),
                                   update_mask=field_mask_pb2.FieldMask(paths=list(changes)))
    return stub.UpdateSmtp(request, metadata=_auth(ALICE_TOKEN))


def _no_secret(events: list[Event]) -> None:
    for event in events:
        wire = event.SerializeToString()
        for value in PLANTED:
            assert value.encode() not in wire, f"{value} in a {Event.Kind.Name(event.kind)} message"


def test_snapshot_first_then_a_change_per_update_without_secrets(channel: grpc.Channel) -> None:
    first = update(channel)
    stream = Stream(channel, ALICE_TOKEN)
    snapshot = stream.next()
    assert snapshot.kind == Event.KIND_SNAPSHOT
    assert snapshot.etag == first.etag and snapshot.profile.port == 587
    assert snapshot.profile.relay_password.has_value and not snapshot.profile.relay_password.secret_value
    revisions = [snapshot.revision]
    for port in (2525, 2526, 2527):
        written = update(channel, Port=port)
        change = stream.next_not_progress()
        assert change.kind == Event.KIND_CHANGE
        assert (change.profile.port, change.etag) == (port, written.etag)
        assert change.update_time == written.update_time
        revisions.append(change.revision)
    assert revisions == sorted(set(revisions)), "revisions strictly increase"
    stream.cancel()
    _no_secret(stream.received)


def test_a_snapshot_without_a_profile_has_none_and_the_first_update_follows(channel: grpc.Channel) -> None:
    stream = Stream(channel, ALICE_TOKEN)
    snapshot = stream.next()
    assert snapshot.kind == Event.KIND_SNAPSHOT and not snapshot.HasField("profile") and snapshot.etag == ""
    written = update(channel)
    change = stream.next_not_progress()
    assert change.kind == Event.KIND_CHANGE and change.etag == written.etag and change.revision > snapshot.revision
    stream.cancel()


def test_resume_gets_exactly_the_missed_changes(channel: grpc.Channel) -> None:
    update(channel)
    stream = Stream(channel, ALICE_TOKEN)
    seen = stream.next().revision
    stream.cancel()
    missed = [update(channel, Port=port).etag for port in (3001, 3002, 3003)]
    resumed = Stream(channel, ALICE_TOKEN, after=seen)
    replay = [resumed.next() for _ in missed]
    assert [e.kind for e in replay] == [Event.KIND_CHANGE] * 3
    assert [e.etag for e in replay] == missed
    assert [e.profile.port for e in replay] == [3001, 3002, 3003]
    later = update(channel, Port=3004)
    following = resumed.next_not_progress()
    assert following.etag == later.etag, "no duplicate of a replayed change, nothing skipped"
    resumed.cancel()
    _no_secret(resumed.received)


def test_resume_at_the_current_revision_gets_progress_at_once(channel: grpc.Channel) -> None:
    update(channel)
    first = Stream(channel, ALICE_TOKEN)
    current = first.next().revision
    first.cancel()
    resumed = Stream(channel, ALICE_TOKEN, after=current)
    progress = resumed.next(timeout=1.0)  # not waiting for the progress clock
    assert progress.kind == Event.KIND_PROGRESS and progress.revision >= current
    assert not progress.HasField("profile")
    resumed.cancel()


def test_a_revision_from_elsewhere_gets_a_resync_snapshot(channel: grpc.Channel) -> None:
    written = update(channel)
    stream = Stream(channel, ALICE_TOKEN, after=10_000)
    resync = stream.next()
    assert resync.kind == Event.KIND_RESYNC and resync.etag == written.etag and resync.profile.port == 587
    stream.cancel()


def test_resume_after_pruned_history_gets_a_resync_snapshot() -> None:
    for server in _serve(history_keep=2):
        with grpc.insecure_channel(server.target) as channel:
            update(channel)
            old = Stream(channel, ALICE_TOKEN)
            seen = old.next().revision
            old.cancel()
            for port in (4001, 4002, 4003):
                last = update(channel, Port=port)
            stream = Stream(channel, ALICE_TOKEN, after=seen)
            resync = stream.next()
            assert resync.kind == Event.KIND_RESYNC
            assert (resync.etag, resync.profile.port) == (last.etag, 4003)
            assert resync.revision > seen
            stream.cancel()
            _no_secret(stream.received)


def test_a_negative_revision_is_invalid(channel: grpc.Channel) -> None:
    error = Stream(channel, ALICE_TOKEN, after=-1).end()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("AfterRevision", "must be 0 or a revision a WatchSmtp stream sent")]


def test_an_idle_stream_gets_progress_within_the_period(channel: grpc.Channel) -> None:
    update(channel)
    stream = Stream(channel, ALICE_TOKEN)
    snapshot = stream.next()
    started = time.monotonic()
    progress = [stream.next(timeout=2.0) for _ in range(3)]
    assert time.monotonic() - started < 2.0  # three periods of 0.3 s, with room for a slow machine
    assert all(p.kind == Event.KIND_PROGRESS and p.revision >= snapshot.revision for p in progress)
    stream.cancel()


def test_without_smtp_watch_the_stream_is_refused(channel: grpc.Channel) -> None:
    stream = Stream(channel, CAROL_TOKEN)  # carol holds smtp:read only
    error = stream.end()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "'carol' does not have the smtp:watch permission"


def test_streams_per_identity_are_limited_and_do_not_take_call_slots() -> None:
    for server in _serve(max_watch_streams_per_identity=2, max_concurrent_rpcs_per_identity=1):
        with grpc.insecure_channel(server.target) as channel:
            update(channel)
            streams = [Stream(channel, ALICE_TOKEN) for _ in range(2)]
            for stream in streams:
                stream.next()
            refused = Stream(channel, ALICE_TOKEN).end()
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_watch_streams_per_identity" in refused.details()
            # Two open streams, one call slot: unary calls of the same identity still go through.
            update(channel, Port=2000)
            streams[0].cancel()
            assert streams[0].end().code() == grpc.StatusCode.CANCELLED

            def third_opens() -> bool:
                stream = Stream(channel, ALICE_TOKEN)
                item = stream.events.get(timeout=10)
                stream.cancel()
                return isinstance(item, Event)

            deadline = time.monotonic() + 10
            while not third_opens():  # the server frees the slot once it sees the cancel
                assert time.monotonic() < deadline, "the slot of a cancelled stream was never freed"
                time.sleep(0.05)
            streams[1].cancel()


def test_the_age_limit_ends_a_stream_unavailable() -> None:
    for server in _serve(watch_max_age_seconds=0.5, watch_progress_seconds=60):
        with grpc.insecure_channel(server.target) as channel:
            started = time.monotonic()
            stream = Stream(channel, ALICE_TOKEN)
            stream.next()
            error = stream.end()
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "stream age limit; reconnect with AfterRevision"
            assert 0.4 <= time.monotonic() - started < 5


def test_stopping_the_server_ends_streams_unavailable_at_once() -> None:
    data_dir = short_dir()
    server = ServerThread(data_dir, **CALLERS).start()  # stops with a grace period of 1 s
    stopping = threading.Thread(target=server.stop)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stream = Stream(channel, ALICE_TOKEN)
            stream.next()
            started = time.monotonic()
            stopping.start()
            error = stream.end()
            ended = time.monotonic() - started
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "the server is shutting down; reconnect with AfterRevision"
            assert ended < 0.9, "the stream was held for the grace period instead of ended at once"
    finally:
        if not stopping.is_alive() and stopping.ident is None:
            stopping.start()
        stopping.join(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_stream_leaves_a_start_and_an_end_record(server: ServerThread, channel: grpc.Channel) -> None:
    update(channel)
    stream = Stream(channel, ALICE_TOKEN, after=0)
    stream.next()
    update(channel, Port=2600)
    stream.next_not_progress()
    stream.cancel()
    stream.end()

    def watch_records() -> list:
        return [r for r in list_records(channel, ALICE_TOKEN) if r.method == "v2.ConfigService/WatchSmtp"]

    deadline = time.monotonic() + 10
    while len(watch_records()) < 2:
        assert time.monotonic() < deadline, watch_records()
        time.sleep(0.05)
    start, end = watch_records()
    assert (start.identity, start.outcome) == ("alice", "OK")
    assert start.message == "watch from a snapshot: started"
    assert end.outcome == "CANCELLED"
    assert end.message.startswith("watch from a snapshot; ") and " messages sent" in end.message
    assert len(watch_records()) == 2, "no record per message"


# --- smtpconfig watch ---------------------------------------------------------------------------


class WatchCommand:
    """`smtpconfig watch` as a subprocess; its stdout lines read with a timeout."""

    def __init__(self, *argv: str) -> None:
        # faulthandler: should Ctrl-C ever leave it running, SIGABRT (below) prints every thread's stack.
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "smtpconfig.cli", "watch", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, containing: str = "", timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {containing!r} in {timeout}s; stderr: {self.stop()}") from None
            if containing in line:
                return line

    def stop(self) -> str:
        """Ctrl-C, as an operator ends it; what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGABRT)  # where it hangs goes to stderr, for the assertion
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_cli_watch_prints_a_change_made_meanwhile(server: ServerThread, channel: grpc.Channel) -> None:
    update(channel)
    command = WatchCommand(*server.cli_args)
    try:
        snapshot = command.line("SNAPSHOT")
        assert "smtp.example.com:587" in snapshot
        written = update(channel, Port=2525, SenderName="Ops")
        change = command.line("CHANGE")
        assert f"etag {written.etag}" in change
        assert "Port 587 -> 2525" in change and "SenderName Example Relay -> Ops" in change
        assert "Host" not in change, "only what changed"
    finally:
        stderr = command.stop()
    assert command.proc.returncode == 130 and "Traceback" not in stderr, stderr


def test_cli_watch_json_is_one_object_per_line_and_resumes_after(server: ServerThread, channel: grpc.Channel) -> None:
    first = update(channel)
    command = WatchCommand(*server.cli_args, "--json")
    try:
        snapshot = json.loads(command.line('"KIND_SNAPSHOT"'))
        assert snapshot["Etag"] == first.etag and snapshot["Profile"]["Port"] == 587
        assert isinstance(snapshot["Revision"], int)
        assert PASSWORD not in json.dumps(snapshot)
    finally:
        command.stop()
    missed = update(channel, Port=2700)
    resumed = WatchCommand(*server.cli_args, "--json", "--after", str(snapshot["Revision"]))
    try:
        change = json.loads(resumed.line('"KIND_CHANGE"'))
        assert (change["Etag"], change["Profile"]["Port"]) == (missed.etag, 2700)
    finally:
        resumed.stop()


def test_cli_watch_reconnects_after_the_server_restarts_and_misses_nothing() -> None:
    data_dir = short_dir()
    server = ServerThread(data_dir, **CALLERS).start()
    socket_args = ("--target", f"unix:{data_dir / 'smtpconfig.sock'}", "--token-file", str(server.token_path))
    command = WatchCommand(*socket_args)
    try:
        with grpc.insecure_channel(server.target) as channel:
            update(channel)
        command.line("SNAPSHOT")
        server.stop()
        server = ServerThread(data_dir, **CALLERS).start()
        with grpc.insecure_channel(server.target) as channel:
            written = update(channel, Port=2800)
        change = command.line("CHANGE", timeout=30)
        assert f"etag {written.etag}" in change and "Port 587 -> 2800" in change
    finally:
        stderr = command.stop()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert "shutting down" in stderr and "resuming after revision" in stderr, stderr


def test_a_slow_consumers_queue_collapses_to_the_newest_revision() -> None:
    """A stream whose client does not read (HTTP/2 flow control holds its writes) queues at most
    MAX_PENDING revisions; beyond, it keeps only the newest: the state of the world."""
    def stored(revision: int) -> StoredProfile:
        return StoredProfile(None, f"etag-{revision}", revision, datetime.now(UTC))  # type: ignore[arg-type]

    async def scenario() -> None:
        subscription = Subscription()
        for revision in range(1, 3 * MAX_PENDING + 1):
            subscription.put(stored(revision))
        subscription.put(Progress(3 * MAX_PENDING + 5))
        drained = []
        while True:
            try:
                drained.append(await asyncio.wait_for(subscription.next(), 0.05))
            except TimeoutError:
                break
        assert len(drained) <= MAX_PENDING + 1
        revisions = [event.revision for event in drained]
        assert revisions == sorted(revisions), "still in revision order"
        assert revisions[-2:] == [3 * MAX_PENDING, 3 * MAX_PENDING + 5]
        assert isinstance(drained[-1], Progress)
        subscription.end(Ended("bye"))
        subscription.put(stored(999))
        assert await subscription.next() == Ended("bye"), "an end comes before anything still queued"

    asyncio.run(scenario())


def test_under_a_stream_of_writes_progress_never_runs_ahead_of_a_change() -> None:
    """Progress at R says "nothing changed up to R": no change at or below R may follow it, however
    the writes and the shared progress clock interleave; every write arrives, in order."""
    for server in _serve(watch_progress_seconds=0.01):
        with grpc.insecure_channel(server.target) as channel:
            update(channel)
            stream = Stream(channel, ALICE_TOKEN)
            stream.next()
            written = [update(channel, Port=5000 + n).etag for n in range(40)]
            while not stream.received or stream.received[-1].etag != written[-1]:
                stream.next()
            stream.cancel()
    events = stream.received
    assert [e.etag for e in events if e.kind == Event.KIND_CHANGE] == written, "every write, once, in order"
    changes = [e.revision for e in events if e.kind != Event.KIND_PROGRESS]
    assert changes == sorted(set(changes))
    progressed = 0
    for event in events:
        if event.kind == Event.KIND_PROGRESS:
            assert event.revision >= progressed
            progressed = event.revision
        else:
            assert event.revision > progressed, "a change at or below a revision progress already announced"
    assert any(e.kind == Event.KIND_PROGRESS for e in events), "the clock ticked during the writes"
