"""The shared store of cluster mode: an etcd v3 cluster, reached with etcd3aio's generated stubs.

Only this module imports the etcd client. etcd3aio (0.3.0) gives the generated etcd v3 gRPC stubs;
its own retry and watch layers are not used, because of faults measured on this kind of machine
(docs in the project's etcd notes) that this module fixes:

- its watch resumes from a response header's revision + 1, which during catch-up is ahead of the
  events delivered, so a reconnect can skip events: here a watch resumes from the last delivered
  event's `mod_revision` + 1 (as etcd's Go client does), and from the creation header only before
  any event arrived;
- after a compaction it yields a canceled response and then jumps past the gap: here that is a
  `Resync` for the follower, which re-reads everything under its prefix;
- one timeout bounds all its retries: here each attempt has its own deadline (`etcd_timeout`) and
  there is a bounded number of attempts;
- a write whose outcome is unknown (a deadline or UNAVAILABLE during a leader change) is decided
  by reading back: each stored value carries a unique write id, each delete leaves one behind, so a
  write that did apply is reported as done, never as a conflict;
- watches carry the require-leader metadata (`hasleader: true`), so a member cut off from the
  leader ends the stream and the watch moves to another member;
- compare-and-set is a transaction comparing the key's `mod_revision` (or `version` 0 for "absent").

Layout under the prefix (default ``/smtpconfig/``): ``kv/<key>`` holds a value in an envelope
(magic, write id, write time, value); ``tomb/<key>`` the write id of the key's last delete;
``audit/<time>-<write id>-<n>`` change records, written in the transaction of their change;
``meta/key_id`` the id of the key the sealed values need. Reads are linearizable. One channel per
endpoint; calls stay on one endpoint until it fails, then move to the next.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` names a method inside the store classes
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc

from smtpconfig.core.errors import FailedPrecondition, Unavailable
from smtpconfig.store.base import AuditEntry, Change, EtagMismatch, Resync, Revision, _Absent, make_etag


def _import_stubs() -> Any:
    """etcd3aio's generated stubs. It prepends its proto folder to sys.path to import them; that
    folder holds its own `google.api`, so it comes out of sys.path again once they are loaded."""
    before = list(sys.path)
    try:
        from etcd3aio import _protobuf
    finally:
        sys.path[:] = before
    return _protobuf


pb = _import_stubs()

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAGIC = b"SC1\x00"
_ID_BYTES = 16
_HEADER = len(_MAGIC) + _ID_BYTES + 8
_ATTEMPTS = 3  # per call; each with its own deadline
_BACKOFF = (0.1, 0.3, 1.0)
_WATCH_BACKOFF_MAX = 2.0
# Changes of one key `history` replays at most; beyond, the follower re-reads instead.
_HISTORY_STEPS = 1000
_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Channel keepalives: a member that stops answering without closing its connections (a hung host)
# is noticed within keepalive time + timeout while a call (a watch) is open. etcd refuses pings more
# often than every 5 s, or on a connection without calls (GOAWAY too_many_pings), hence these.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.http2.ping_timeout_ms", 3000),  # what grpcio 1.85 waits for a ping's answer (default 60 s)
    ("grpc.keepalive_permit_without_calls", 0),
    # A silent member sends no data: keep pinging it until it answers or the connection is dropped.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)
# Compare and filter enums of etcd's rpc.proto.
_EQUAL, _VERSION, _MOD = 0, 0, 2
_DELETE_EVENT = 1


@dataclass(frozen=True)
class EtcdOptions:
    """How to reach the cluster: endpoints (host:port), the key prefix, TLS and a user."""

    endpoints: tuple[str, ...]
    prefix: str = "/smtpconfig/"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    user: str = ""
    password_file: Path | None = None
    timeout: float = 2.0


def _range_end(prefix: bytes) -> bytes:
    """The end of the key range starting with `prefix` (etcd's prefix convention)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _revision_of(etag: str) -> int | None:
    """The store revision an etag names (`make_etag` writes it first, in hex)."""
    head, sep, _ = etag.partition("-")
    try:
        return int(head, 16) if sep else None
    except ValueError:
        return None


def _envelope(write_id: bytes, at: datetime, value: bytes) -> bytes:
    micros = int(at.timestamp() * 1_000_000)
    return _MAGIC + write_id + micros.to_bytes(8, "big", signed=True) + value


def _open_envelope(data: bytes) -> tuple[bytes, datetime, bytes]:
    if not data.startswith(_MAGIC) or len(data) < _HEADER:
        raise FailedPrecondition("a value in etcd under the smtpconfig prefix was not written by smtpconfig")
    write_id = data[len(_MAGIC) : len(_MAGIC) + _ID_BYTES]
    micros = int.from_bytes(data[len(_MAGIC) + _ID_BYTES : _HEADER], "big", signed=True)
    return write_id, datetime.fromtimestamp(micros / 1_000_000, UTC), data[_HEADER:]


class _Unknown(Exception):
    """A write attempt failed in a way that leaves its outcome unknown."""


class EtcdStore:
    """`Store` on an etcd cluster. Create with `await EtcdStore.open(options)`."""

    def __init__(self, options: EtcdOptions) -> None:
        if not options.endpoints:
            raise FailedPrecondition("etcd_endpoints is empty: name at least one etcd member (host:port)")
        self.options = options
        self._prefix = options.prefix.encode()
        self._kv = self._prefix + b"kv/"
        self._timeout = options.timeout
        self._credentials = self._channel_credentials(options)
        self._channels: list[grpc.aio.Channel | None] = [None] * len(options.endpoints)
        self._current = 0
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._closed = False
        self.name = f"etcd at {','.join(options.endpoints)}"

    # --- connection -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, options: EtcdOptions) -> EtcdStore:
        store = cls(options)
        await store._authenticate()
        await store.revision()  # reachable now, or the start fails naming the store
        return store

    @staticmethod
    def _channel_credentials(options: EtcdOptions) -> grpc.ChannelCredentials | None:
        if options.ca_file is None and options.cert_file is None:
            return None
        if (options.cert_file is None) != (options.key_file is None):
            raise FailedPrecondition("etcd_cert_file and etcd_key_file go together: set both or neither")

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as error:
                raise FailedPrecondition(f"cannot read {path}: {error.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(options.ca_file), private_key=read(options.key_file),
            certificate_chain=read(options.cert_file),
        )

    def _channel(self, index: int) -> grpc.aio.Channel:
        channel = self._channels[index]
        if channel is None:
            target = self.options.endpoints[index]
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(target, self._credentials, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            self._channels[index] = channel
        return channel

    def _move_on(self, index: int) -> None:
        """The endpoint at `index` failed: the next call goes to the next one."""
        if self._current == index:
            self._current = (index + 1) % len(self._channels)

    def _metadata(self, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        token = (("token", self._token),) if self._token else ()
        return token + extra

    async def _authenticate(self) -> None:
        options = self.options
        if not options.user:
            return
        if options.password_file is None:
            raise FailedPrecondition("etcd_user needs etcd_password_file (the password is read from a file only)")
        try:
            password = options.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise FailedPrecondition(f"cannot read etcd_password_file {options.password_file}: {error.strerror}") from None
        async with self._auth_lock:
            self._token = None
            request = pb.AuthenticateRequest(name=options.user, password=password)
            response = await self._call(lambda ch: pb.AuthStub(ch).Authenticate, request, auth=False)
            self._token = response.token

    def _unreachable(self, error: grpc.aio.AioRpcError | None) -> Unavailable:
        cause = "no answer in time" if error is None else f"{error.code().name}: {error.details() or 'no details'}"
        return Unavailable(f"the store ({self.name}) cannot be reached: {cause}; try again")

    async def _call(self, method: Callable[[grpc.aio.Channel], Any], request: Any, *, auth: bool = True) -> Any:
        """One unary call with a deadline per attempt and a bounded number of attempts, each on the
        current endpoint (moving on after a failure). Only for calls safe to repeat (reads)."""
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(_ATTEMPTS):
            index = self._current
            try:
                return await method(self._channel(index))(request, timeout=self._timeout, metadata=self._metadata())
            except grpc.aio.AioRpcError as error:
                last = error
                if auth and error.code() == grpc.StatusCode.UNAUTHENTICATED and self.options.user:
                    await self._authenticate()  # the token expired: one more attempt with a new one
                    continue
                if error.code() not in _RETRY_CODES:
                    raise self._refused(error) from None
                self._move_on(index)
            if attempt + 1 < _ATTEMPTS:
                await asyncio.sleep(_BACKOFF[attempt])
        raise self._unreachable(last)

    def _refused(self, error: grpc.aio.AioRpcError) -> Exception:
        refusals = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
        if error.code() in refusals:
            return FailedPrecondition(
                f"the store ({self.name}) refused this server: {error.code().name}: {error.details() or ''}"
                " (check etcd_user, etcd_password_file and the user's role)"
            )
        return Unavailable(f"the store ({self.name}) failed: {error.code().name}: {error.details() or 'no details'}")

    # --- reads ----------------------------------------------------------------------------------

    def _revision(self, kv: Any) -> Revision:
        _, at, value = _open_envelope(kv.value)
        return Revision(kv.key[len(self._kv) :].decode(), value, kv.mod_revision, make_etag(kv.mod_revision, value), at)

    async def _range(self, request: Any) -> Any:
        return await self._call(lambda ch: pb.KVStub(ch).Range, request)

    async def get(self, key: str) -> Revision | None:
        response = await self._range(pb.RangeRequest(key=self._kv + key.encode()))
        return self._revision(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str) -> builtins.list[Revision]:
        start = self._kv + prefix.encode()
        response = await self._range(pb.RangeRequest(key=start, range_end=_range_end(start)))
        return [self._revision(kv) for kv in response.kvs]  # etcd returns keys in byte order

    async def revision(self) -> int:
        response = await self._range(pb.RangeRequest(key=self._prefix + b"meta/key_id", count_only=True))
        return int(response.header.revision)

    async def ping(self) -> None:
        # A linearizable read needs the leader and a quorum, as a write does; it writes nothing.
        await self.revision()

    # --- writes ---------------------------------------------------------------------------------

    def _audit_put(self, audit: AuditEntry | None, write_id: bytes) -> builtins.list[Any]:
        if audit is None:
            return []
        at, record = audit
        key = self._prefix + f"audit/{at:020d}-{write_id.hex()}-0000".encode()
        return [pb.RequestOp(request_put=pb.PutRequest(key=key, value=record))]

    async def put(
        self, key: str, value: bytes, expected: str | _Absent | None = None, audit: AuditEntry | None = None
    ) -> Revision:
        full = self._kv + key.encode()
        compare = self._compare(full, expected, key)
        write_id = os.urandom(_ID_BYTES)
        at = datetime.now(UTC)
        success = [pb.RequestOp(request_put=pb.PutRequest(key=full, value=_envelope(write_id, at, value)))]
        success += self._audit_put(audit, write_id)
        request = pb.TxnRequest(compare=compare, success=success)

        async def applied() -> int | None:
            return await self._find_put(full, write_id, expected)

        number = await self._write(request, applied, key)
        return Revision(key, value, number, make_etag(number, value), at)

    async def delete(self, key: str, expected: str | None = None, audit: AuditEntry | None = None) -> bool:
        full = self._kv + key.encode()
        if expected is None:
            current = await self._range(pb.RangeRequest(key=full, keys_only=True))
            if not current.kvs:
                return False
            compare = [pb.Compare(result=_EQUAL, target=_MOD, key=full, mod_revision=current.kvs[0].mod_revision)]
            base = int(current.kvs[0].mod_revision)
        else:
            compare = self._compare(full, expected, key)
            base = compare[0].mod_revision
        write_id = os.urandom(_ID_BYTES)
        tomb = self._prefix + b"tomb/" + key.encode()
        success = [
            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=full)),
            pb.RequestOp(request_put=pb.PutRequest(key=tomb, value=write_id)),
        ]
        success += self._audit_put(audit, write_id)
        request = pb.TxnRequest(compare=compare, success=success)

        async def applied() -> int | None:
            return await self._find_delete(full, tomb, write_id, base)

        try:
            await self._write(request, applied, key)
        except EtagMismatch:
            if expected is None:  # someone else deleted or changed it meanwhile: ours did not delete
                return False
            raise
        return True

    def _compare(self, full: bytes, expected: str | _Absent | None, key: str) -> builtins.list[Any]:
        if expected is None:
            return []
        if isinstance(expected, _Absent):
            return [pb.Compare(result=_EQUAL, target=_VERSION, key=full, version=0)]
        number = _revision_of(expected)
        if number is None:
            raise EtagMismatch(key)
        return [pb.Compare(result=_EQUAL, target=_MOD, key=full, mod_revision=number)]

    async def _write(self, request: Any, applied: Callable[[], Awaitable[int | None]], key: str) -> int:
        """Commit a transaction; its revision. After an attempt whose outcome is unknown (a deadline,
        or UNAVAILABLE once the request may have been sent) `applied` decides it (the revision it
        was written at, or None when it was not) before another attempt is made."""
        last: grpc.aio.AioRpcError | None = None
        unknown = False  # an attempt may have been applied and that is not decided yet
        uncertain = False  # an attempt may still be applied later (a proposal outlives its deadline)
        for attempt in range(_ATTEMPTS):
            index = self._current
            if unknown:
                try:
                    number = await applied()
                except Unavailable:
                    number = None  # still unknown; this attempt is not made
                else:
                    unknown = False
                    if number is not None:
                        return number
                if unknown:
                    await asyncio.sleep(_BACKOFF[attempt])
                    continue
            try:
                response = await pb.KVStub(self._channel(index)).Txn(
                    request, timeout=self._timeout, metadata=self._metadata()
                )
            except grpc.aio.AioRpcError as error:
                last = error
                if error.code() == grpc.StatusCode.UNAUTHENTICATED and self.options.user:
                    await self._authenticate()  # refused before it was applied
                    continue
                if error.code() not in _RETRY_CODES:
                    raise self._refused(error) from None
                self._move_on(index)
                if not _never_sent(error):
                    unknown = uncertain = True
                if attempt + 1 < _ATTEMPTS:
                    await asyncio.sleep(_BACKOFF[attempt])
                continue
            if not response.succeeded:
                # An earlier attempt may have been committed after all: then this compare fails on
                # our own write.
                number = await self._decide(applied) if uncertain else None
                if number is not None:
                    return number
                raise EtagMismatch(key)
            return int(response.header.revision)
        if unknown:
            number = await self._decide(applied)
            if number is not None:
                return number
        raise self._unreachable(last)

    async def _decide(self, applied: Callable[[], Awaitable[int | None]]) -> int | None:
        try:
            return await applied()
        except Unavailable:
            # Still unreachable: the outcome stays unknown, and the caller must not be told "not
            # written" (it may have been). Reported as unavailable; the change may be there.
            raise Unavailable(
                f"the store ({self.name}) cannot be reached, and whether this write was applied is not"
                " known yet; read the value again before retrying"
            ) from None

    async def _walk(self, key: bytes, tomb: bytes | None, after: int) -> builtins.list[tuple[int, Any | None]]:
        """Every change of `key` with a revision above `after`, oldest first: (revision, its
        KeyValue, or None for a delete). Walks back from now through reads at past revisions (a
        delete is found through the key's tomb, written in the delete's transaction). Raises
        `_Compacted` when that history is gone."""
        found: builtins.list[tuple[int, Any | None]] = []
        at = await self.revision()
        while at > after:
            if len(found) >= _HISTORY_STEPS:
                raise _Compacted  # too long to replay: a fresh read serves better
            kv = await self._range_at(key, at)
            gone = await self._range_at(tomb, at) if tomb is not None else None
            last_put = int(kv.mod_revision) if kv is not None else 0
            last_delete = int(gone.mod_revision) if gone is not None and kv is None else 0
            last = max(last_put, last_delete)
            if last <= after:
                break
            found.append((last, kv if last == last_put else None))
            at = last - 1
        found.reverse()
        return found

    async def _range_at(self, key: bytes, revision: int) -> Any | None:
        try:
            response = await self._range(pb.RangeRequest(key=key, revision=revision))
        except Unavailable as error:
            if "compacted" in str(error):
                raise _Compacted from None
            raise
        return response.kvs[0] if response.kvs else None

    async def _find_put(self, full: bytes, write_id: bytes, expected: str | _Absent | None) -> int | None:
        current = await self._range(pb.RangeRequest(key=full))
        if current.kvs and _open_envelope(current.kvs[0].value)[0] == write_id:
            return int(current.kvs[0].mod_revision)
        # Ours may have applied and been overwritten since: with compare-and-set it would be the
        # first change after the version it compared with.
        if isinstance(expected, str):
            base = _revision_of(expected) or 0
        elif isinstance(expected, _Absent) and current.kvs:
            base = int(current.kvs[0].create_revision) - 1
        else:
            return None  # an unconditional put that is not there was not applied (or was undone)
        try:
            changes = await self._walk(full, None, base)
        except _Compacted:
            return None
        if changes and changes[0][1] is not None and _open_envelope(changes[0][1].value)[0] == write_id:
            return changes[0][0]
        return None

    async def _find_delete(self, full: bytes, tomb: bytes, write_id: bytes, base: int) -> int | None:
        try:
            changes = await self._walk(tomb, None, base)
        except _Compacted:
            changes = []
            current = await self._range(pb.RangeRequest(key=tomb))
            if current.kvs:
                changes = [(int(current.kvs[0].mod_revision), current.kvs[0])]
        if changes and changes[0][1] is not None and changes[0][1].value == write_id:
            return changes[0][0]
        return None

    # --- watch and history ----------------------------------------------------------------------

    async def history(self, key: str, after: int) -> builtins.list[Change] | None:
        full = self._kv + key.encode()
        try:
            changes = await self._walk(full, self._prefix + b"tomb/" + key.encode(), after)
        except _Compacted:
            return None
        return [Change(key, None if kv is None else self._revision(kv), at) for at, kv in changes]

    def _change(self, event: Any) -> Change:
        key = event.kv.key[len(self._kv) :].decode()
        if event.type == _DELETE_EVENT:
            return Change(key, None, int(event.kv.mod_revision))
        return Change(key, self._revision(event.kv), int(event.kv.mod_revision))

    def settle(self) -> builtins.list[Change | Resync]:
        return []  # other replicas' changes come through the watch

    async def watch(self, prefix: str, after: int | None = None) -> AsyncIterator[Change | Resync]:
        start = self._kv + prefix.encode()
        end = _range_end(start)
        next_revision = 0 if after is None else after + 1
        delay = _BACKOFF[0]
        lost = False  # said once per outage; the recovery is said too
        while not self._closed:
            index = self._current
            call = None
            create = pb.WatchCreateRequest(key=start, range_end=end, start_revision=next_revision)
            requests = _CreateThenWait(pb.WatchRequest(create_request=create))
            try:
                call = pb.WatchStub(self._channel(index)).Watch(requests, metadata=self._metadata(("hasleader", "true")))
                async for response in call:
                    delay = _BACKOFF[0]
                    if lost:
                        lost = False
                        log.info("watch of %r resumed on %s from revision %s", prefix, self.options.endpoints[index],
                                 next_revision or "now")
                    if response.compact_revision:
                        # The history from next_revision is gone: the follower re-reads, and the
                        # watch goes on from the revision that re-read is at least as new as.
                        now = await self.revision()
                        log.warning(
                            "etcd compacted past revision %s that this watch needed; re-reading %r at %s",
                            next_revision, prefix, now,
                        )
                        next_revision = now + 1
                        yield Resync(now)
                        break
                    if response.created and next_revision == 0:
                        next_revision = int(response.header.revision) + 1
                    for event in response.events:
                        next_revision = int(event.kv.mod_revision) + 1  # never a header's revision
                        try:
                            change = self._change(event)
                        except FailedPrecondition:
                            log.error("a value at %r was not written by smtpconfig; ignored", bytes(event.kv.key))
                            continue
                        yield change
                    if response.canceled:
                        log.warning("etcd canceled a watch (%s); watching again", response.cancel_reason or "no reason")
                        break
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and self._closed:
                    return
                if error.code() == grpc.StatusCode.UNAUTHENTICATED and self.options.user:
                    with contextlib.suppress(Exception):
                        await self._authenticate()
                (log.debug if lost else log.warning)(
                    "watch of %r on %s lost (%s: %s); resuming from revision %s",
                    prefix, self.options.endpoints[index], error.code().name, error.details(), next_revision or "now",
                )
                lost = True
                self._move_on(index)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _WATCH_BACKOFF_MAX)
            except (Unavailable, FailedPrecondition) as error:  # the re-read's revision, or a refusal
                (log.debug if lost else log.warning)("watch of %r interrupted (%s); trying again", prefix, error)
                lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _WATCH_BACKOFF_MAX)
            finally:
                if call is not None:
                    call.cancel()
                requests.end()

    # --- the key claim and audit ------------------------------------------------------------------

    async def claim_key(self, key_id: str) -> None:
        full = self._prefix + b"meta/key_id"
        request = pb.TxnRequest(
            compare=[pb.Compare(result=_EQUAL, target=_VERSION, key=full, version=0)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=full, value=key_id.encode()))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=full))],
        )
        # Claiming twice is harmless, so an attempt of unknown outcome is simply made again.
        response = await self._call(lambda ch: pb.KVStub(ch).Txn, request)
        if response.succeeded:
            log.info("claimed %s for data sealed with key %s", self.name, key_id)
            return
        claimed = response.responses[0].response_range.kvs[0].value.decode()
        if claimed != key_id:
            raise FailedPrecondition(
                f"the data in {self.name} under {self.options.prefix} was encrypted with key {claimed}, but the"
                f" configured key is {key_id}; start the server with the key the data was written with (key id {claimed})"
            )

    async def import_audit(self, entries: builtins.list[AuditEntry]) -> None:
        if not entries:
            return
        write_id = os.urandom(_ID_BYTES).hex()
        ops = [
            pb.RequestOp(request_put=pb.PutRequest(
                key=self._prefix + f"audit/{at:020d}-{write_id}-{n:04d}".encode(), value=record,
            ))
            for n, (at, record) in enumerate(entries)
        ]
        await self._write(pb.TxnRequest(success=ops), _not_applied, "audit")

    async def read_audit(self, after: int, since: int | None, limit: int) -> builtins.list[tuple[int, int, bytes]]:
        start = self._prefix + b"audit/"
        first = start + f"{since:020d}".encode() if since is not None and since > 0 else start
        request = pb.RangeRequest(key=first, range_end=_range_end(start), min_mod_revision=after >> 16)
        response = await self._range(request)
        rows = []
        for kv in response.kvs:
            at, _, n = kv.key[len(start) :].decode().split("-")
            sequence = (int(kv.mod_revision) << 16) | int(n)
            if sequence > after:
                rows.append((sequence, int(at), bytes(kv.value)))
        rows.sort()
        return rows[:limit]

    async def prune_audit(self, before: int) -> int:
        start = self._prefix + b"audit/"
        request = pb.DeleteRangeRequest(key=start, range_end=start + f"{before:020d}".encode())
        # Deleting what is older than a time is the same however often it is done.
        response = await self._call(lambda ch: pb.KVStub(ch).DeleteRange, request)
        return int(response.deleted)

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels:
            if channel is not None:
                await channel.close()
        self._channels = [None] * len(self._channels)


def _never_sent(error: grpc.aio.AioRpcError) -> bool:
    """The call failed before a connection to a member existed: nothing was sent, so nothing
    can have been applied."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (error.details() or "")


class _Compacted(Exception):
    """The history asked for is gone (etcd compacted it)."""


async def _not_applied() -> int | None:
    # Audit records carry no id to look for; one lost to an unknown outcome is written again,
    # which at worst stores it twice, never loses it.
    return None


class _CreateThenWait:
    """The request side of a watch stream: the create request, then nothing until `end`.

    grpc reads it in a task of its own, and cancels that task only when the call is cancelled
    while still open: after a stream the member ended (killed, partitioned) the task would wait
    here for ever, one more for each member the watch moved away from. `end` lets it finish.
    A plain async iterator, not an async generator: an async generator cancelled by grpc logs
    "aclose(): asynchronous generator is already running" at shutdown."""

    def __init__(self, create: Any) -> None:
        self._create: Any | None = create
        self._ended = asyncio.Event()

    def __aiter__(self) -> _CreateThenWait:
        return self

    async def __anext__(self) -> Any:
        if self._create is not None:
            create, self._create = self._create, None
            return create
        await self._ended.wait()
        raise StopAsyncIteration

    def end(self) -> None:
        """No more requests: the stream's request side finishes."""
        self._ended.set()
