"""The edge's side of the upstream: follow its profile with WatchSmtp, resolve through it.

`Followed` holds the upstream's profile in memory (never on disk) as the upstream showed it, and
gives WatchSmtp (`ProfileWatch`) the interface `ProfileService` gives it: `current`, `on_change`,
`catch_up` (the upstream's revision from its latest PROGRESS or change) and `changes_after`.
It keeps the last `keep` revisions it followed (in memory only), so that a WatchSmtp client of the
edge that resumes with AfterRevision gets the changes it missed rather than a RESYNC. When the edge
itself gets a RESYNC from its upstream (it lost track, or follows another upstream now), that
history is dropped and `on_resync` listeners are told: streams of the edge's clients must end, so
that they resume and resync too, rather than see a revision that goes down.

`Upstream` dials the upstream addresses in turn (the next one on UNAVAILABLE, with backoff),
follows the profile, and answers ResolveSmtp from one shared upstream call per expiry of the
`cache_for` the upstream gave (single flight). The edge's token is sent upstream and never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from smtpconfig.api.calls import ON_BEHALF_OF
from smtpconfig.core.aio import stop_task
from smtpconfig.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SmtpConfigError,
    Unauthenticated,
    Unavailable,
    violation,
)
from smtpconfig.settings import Settings
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

log = logging.getLogger(__name__)

_EVENT = v2.WatchSmtpEvent
_MAX_DELAY = 5.0


@dataclass(frozen=True)
class FollowedRevision:
    """A revision of the upstream's profile, as its WatchSmtp showed it."""

    shown: v2.SmtpProfile
    etag: str
    revision: int
    updated_at: datetime


class Followed:
    """The upstream's profile as last followed, and the listeners told of each new revision."""

    def __init__(self, keep: int = 100) -> None:
        self._current: FollowedRevision | None = None
        self._revision = 0  # the upstream's revision: nothing changed up to here
        self._listeners: list[Callable] = []
        self._resync_listeners: list[Callable[[], None]] = []
        # The last revisions followed, oldest first; every change after `_kept_from` is in it
        # (None: no history yet, or it was dropped).
        self._kept: deque[FollowedRevision] = deque(maxlen=max(1, keep))
        self._kept_from: int | None = None
        self.connected = False
        self.reached = False  # the upstream answered this edge's WatchSmtp at least once
        self._contact = time.monotonic()  # when the upstream was last known to be followed

    @property
    def current(self) -> FollowedRevision | None:
        return self._current

    def get(self) -> FollowedRevision:
        if self._current is None:
            if not self.reached:  # not "no profile": the app should retry, not give up
                raise Unavailable("this edge has not reached its upstream yet; try again later")
            raise NotFound("the upstream has no SMTP profile yet")
        return self._current

    def age(self) -> float:
        """Seconds the followed profile may be out of date: 0 while the upstream is followed."""
        return 0.0 if self.connected else time.monotonic() - self._contact

    def mark(self, connected: bool) -> None:
        self._contact = time.monotonic()
        self.connected = connected
        self.reached = self.reached or connected

    def take(self, event: v2.WatchSmtpEvent) -> None:
        self._contact = time.monotonic()
        # A resync restarts the count: the upstream's history (or the upstream) is another one.
        self._revision = event.revision if event.kind == _EVENT.KIND_RESYNC else max(self._revision, event.revision)
        restart = event.kind in (_EVENT.KIND_SNAPSHOT, _EVENT.KIND_RESYNC)
        if restart:  # what was kept belongs to another history: clients behind it must resync
            self._kept.clear()
            self._kept_from = event.revision
        if event.kind == _EVENT.KIND_RESYNC:
            for resync_listener in list(self._resync_listeners):
                resync_listener()
        if event.kind == _EVENT.KIND_PROGRESS or not event.HasField("profile"):
            return
        current = self._current
        if current is not None and current.revision >= event.revision and event.kind == _EVENT.KIND_CHANGE:
            return
        self._current = FollowedRevision(
            event.profile, event.etag, event.revision, event.update_time.ToDatetime(tzinfo=UTC)
        )
        self._keep(self._current)
        for listener in list(self._listeners):
            listener(self._current)

    def _keep(self, revision: FollowedRevision) -> None:
        if self._kept_from is None:
            return
        if len(self._kept) == self._kept.maxlen:  # the oldest goes: only changes after it stay known
            self._kept_from = self._kept[0].revision
        self._kept.append(revision)

    def on_change(self, listener: Callable) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_resync(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` whenever the upstream resyncs this edge (its kept history is dropped)."""
        self._resync_listeners.append(listener)
        return lambda: self._resync_listeners.remove(listener)

    async def catch_up(self) -> int:
        return self._revision

    async def changes_after(self, after: int) -> list[FollowedRevision] | None:
        """Every revision followed after `after`, oldest first ([] when `after` is current or
        newer), or None when `after` is older than what is kept: the client must resync.

        Revisions the upstream skipped on this edge's own stream (a slow consumer's queue
        collapses to the newest) are missing here too; the newest is always kept."""
        if self._kept_from is None or after < self._kept_from:
            return None
        return [kept for kept in self._kept if kept.revision > after]


def _error(error: grpc.aio.AioRpcError) -> SmtpConfigError:
    """The upstream's refusal as this server's own error (its message, never its metadata)."""
    kinds: dict[grpc.StatusCode, type[SmtpConfigError]] = {
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    }
    code, text = error.code(), f"upstream: {error.details() or error.code().name}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(text, retry_after=1.0)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument([violation("upstream", text)])
    return kinds.get(code, Unavailable)(text)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The upstream's ResolveSmtp answer as the edge keeps it, and until when (`time.monotonic()`).
    Its `cache_for` is the upstream's at the time it answered: a caller served from it later may
    keep the credentials only for what is `left`, or a rotation upstream could reach it up to
    another `cache_for` late."""

    expires: float
    # The answer serialised without its `cache_for`, once: each caller's is appended to it.
    wire: bytes
    # What every answer served from it names in its audit record, read from the message once: the
    # profile's etag and the fields it reveals (reading them per call made a string of each value).
    etag: str
    revealed: tuple[str, ...]

    @classmethod
    def of(cls, response: v2.ResolveSmtpResponse, expires: float) -> Resolved:
        kept = v2.ResolveSmtpResponse()
        kept.CopyFrom(response)
        kept.ClearField("cache_for")
        credentials = response.credentials
        revealed: tuple[str, ...] = ()
        if credentials.username or credentials.password:
            revealed += ("RelayUsername", "RelayPassword")
        if credentials.access_token:
            revealed += ("AccessToken",)
        return cls(expires, kept.SerializeToString(), response.etag, revealed)

    def left(self) -> float:
        """Seconds a caller served now may keep the answer."""
        return max(0.0, self.expires - time.monotonic())


class Upstream:
    """The connection to the upstream smtpconfig of an edge."""

    def __init__(self, settings: Settings, followed: Followed) -> None:
        self._addresses = settings.upstream
        self._index = 0
        self._settings = settings
        self._followed = followed
        token = None
        if settings.upstream_token_file is not None:
            token = settings.upstream_token_file.read_text(encoding="utf-8").strip()
            if not token:
                raise FailedPrecondition(f"{settings.upstream_token_file} is empty")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = self._tls(settings)
        self._tls_stamp = self._tls_files_stamp()
        self._channel: grpc.aio.Channel | None = None
        self._channel_index = -1
        self._closing: set[asyncio.Task] = set()  # channels left for another address, being closed
        self._follower: asyncio.Task | None = None
        self._cached: Resolved | None = None
        self._flight: asyncio.Task | None = None
        self._refresh_flight: asyncio.Task | None = None
        self._v1: v1.GetSmtpResponse | None = None
        # Bumped by every refresh: an answer asked for before it must not replace a fresher one.
        self._generation = 0
        self.calls = 0  # upstream ResolveSmtp calls made (tests, metrics)

    @staticmethod
    def _tls(settings: Settings) -> grpc.ChannelCredentials | None:
        if settings.upstream_ca_file is None:
            return None
        key = settings.upstream_key_file.read_bytes() if settings.upstream_key_file else None
        cert = settings.upstream_cert_file.read_bytes() if settings.upstream_cert_file else None
        return grpc.ssl_channel_credentials(settings.upstream_ca_file.read_bytes(), key, cert)

    def _tls_files_stamp(self) -> tuple[int, ...]:
        files = (self._settings.upstream_ca_file, self._settings.upstream_cert_file, self._settings.upstream_key_file)
        stamp = []
        for path in files:
            with contextlib.suppress(OSError):
                if path is not None:
                    stamp.append(path.stat().st_mtime_ns)
        return tuple(stamp)

    def _reload_tls(self) -> None:
        """Rotated certificate files (cert-manager renews them in place) are used from the next
        connection on, without a restart; the channel is rebuilt only when they changed."""
        if self._credentials is None:
            return
        stamp = self._tls_files_stamp()
        if stamp == self._tls_stamp:
            return
        try:
            credentials = self._tls(self._settings)
        except OSError as error:  # mid-rotation: try again at the next failure
            log.warning("upstream TLS files cannot be read again: %s", error.strerror)
            return
        self._tls_stamp, self._credentials = stamp, credentials
        self._channel_index = -1  # the next _stub() dials anew with them
        log.info("upstream TLS files changed: using them from the next connection")

    @property
    def name(self) -> str:
        return ", ".join(self._addresses)

    def _stub(self) -> v2_grpc.ConfigServiceStub:
        return v2_grpc.ConfigServiceStub(self._current_channel())

    def _current_channel(self) -> grpc.aio.Channel:
        if self._channel is None or self._channel_index != self._index:
            if self._channel is not None:
                # Closed in the background (its calls end with it); the task is held until done,
                # since the loop keeps only a weak reference to a task.
                closing = asyncio.get_running_loop().create_task(self._channel.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            address = self._addresses[self._index]
            self._channel = (
                grpc.aio.secure_channel(address, self._credentials) if self._credentials
                else grpc.aio.insecure_channel(address)
            )
            self._channel_index = self._index
        return self._channel

    def _next_address(self) -> None:
        self._index = (self._index + 1) % len(self._addresses)

    def _meta(self, on_behalf_of: str = "") -> tuple[tuple[str, str], ...]:
        return self._metadata + (((ON_BEHALF_OF, on_behalf_of),) if on_behalf_of else ())

    # --- following ---

    def start(self) -> None:
        self._follower = asyncio.create_task(self._follow(), name="upstream-follower")

    async def stop(self) -> None:
        await stop_task(self._follower)
        await stop_task(self._flight)
        await stop_task(self._refresh_flight)
        if self._channel is not None:
            await self._channel.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _follow(self) -> None:
        delay = 0.1
        warned: set[str] = set()  # one warning per address and streak of failures, not one per retry
        while True:
            after = await self._followed.catch_up()
            try:
                stream = self._stub().WatchSmtp(v2.WatchSmtpRequest(after_revision=after), metadata=self._meta())
                async for event in stream:
                    if not self._followed.connected:
                        log.info("following upstream %s", self._addresses[self._index])
                    self._followed.mark(True)
                    self._followed.take(event)
                    delay = 0.1
                    warned.clear()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    log.warning("upstream WatchSmtp ended %s", error.code().name)
                elif not self._followed.connected:
                    # Otherwise silent: a refused client certificate or a wrong CA looks like this.
                    address = self._addresses[self._index]
                    if address not in warned:
                        log.warning("upstream %s cannot be followed: %s", address, error.details() or error.code().name)
                        warned.add(address)
                    self._reload_tls()
                    self._next_address()
            if self._followed.connected:
                self._followed.mark(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    # --- calls made for local callers ---

    async def resolve(self, on_behalf_of: str, timeout: float, refresh: bool = False) -> Resolved:
        """The upstream's ResolveSmtp answer, shared while its `cache_for` lasts; concurrent
        callers share one upstream call. `refresh` passes the caller's refresh upstream (every
        cache there is bypassed too) instead of using this cache; concurrent refreshes share one.
        A caller may keep the answer for what is `left` of its time, not the `cache_for` in it."""
        loop = asyncio.get_running_loop()
        if refresh:
            if self._refresh_flight is None or self._refresh_flight.done():
                self._generation += 1
                self._cached = None
                self._refresh_flight = loop.create_task(self._resolve(on_behalf_of, timeout, refresh=True))
            return await asyncio.shield(self._refresh_flight)
        etag = self._followed.current.etag if self._followed.current else ""
        cached = self._cached
        if cached is not None and time.monotonic() < cached.expires and (not etag or cached.etag == etag):
            return cached
        if self._flight is None or self._flight.done():
            self._flight = loop.create_task(self._resolve(on_behalf_of, timeout))
        return await asyncio.shield(self._flight)

    async def _resolve(self, on_behalf_of: str, timeout: float, refresh: bool = False) -> Resolved:
        self.calls += 1
        generation = self._generation
        # The upstream's cache_for counts from its answer, which left after this: counting it from
        # here errs on the side of keeping the credentials a little less long, never longer.
        asked = time.monotonic()
        response = await self._call("ResolveSmtp", v2.ResolveSmtpRequest(refresh=refresh), on_behalf_of, timeout)
        cache_for = max(0.0, response.cache_for.ToTimedelta().total_seconds())
        resolved = Resolved.of(response, asked + cache_for)
        if cache_for > 0 and generation == self._generation:
            self._cached = resolved
        return resolved

    async def test(self, request: v2.TestSmtpRequest, on_behalf_of: str, timeout: float) -> v2.TestSmtpResponse:
        return await self._call("TestSmtp", request, on_behalf_of, timeout)

    async def get_v1(self, on_behalf_of: str, timeout: float) -> v1.GetSmtpResponse:
        """The upstream's v1 GetSmtp (Keyfactor's v1 shape, which only a server that decodes the
        profile can give), fetched once per followed revision and served from that copy while it
        is current, or while the upstream cannot be reached."""
        etag = self._followed.current.etag if self._followed.current else ""
        cached = self._v1
        if cached is not None and (cached.etag == etag or not self._followed.connected):
            return cached
        try:
            answer = await self._call("GetSmtp", v1.GetSmtpRequest(), on_behalf_of, timeout, version=1)
        except Unavailable:
            if cached is None:
                raise
            return cached
        self._v1 = answer
        return answer

    async def test_v1(self, request: v1.TestSmtpRequest, on_behalf_of: str, timeout: float) -> v1.TestSmtpResponse:
        return await self._call("TestSmtp", request, on_behalf_of, timeout, version=1)

    async def _call(self, method: str, request, on_behalf_of: str, timeout: float, version: int = 2):
        """`method` on the upstream, trying each address once while they answer UNAVAILABLE."""
        last: grpc.aio.AioRpcError | None = None
        for _ in self._addresses:
            stub = self._stub() if version == 2 else v1_grpc.ConfigServiceStub(self._current_channel())
            try:
                return await getattr(stub, method)(request, metadata=self._meta(on_behalf_of), timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _error(error) from None
                last = error
                self._next_address()
        assert last is not None
        raise Unavailable(f"the upstream cannot be reached ({last.code().name}); try again later") from None
