"""Following the profile as it changes, for WatchSmtp: what each stream is sent, and when.

One `ProfileWatch` per replica. Each stream subscribes (`open`) before it reads any state, so no
revision taken up after that can pass it by; it then gets, in revision order, every revision this
replica takes up (`StoredProfile`) and the replica's progress announcements (`Progress`).

Progress: one task reads the store's revision every `progress_seconds`, shared by every stream
(not one read per stream), through `ProfileService.catch_up`, which first takes up every change of
the profile at or below that revision. So "nothing changed up to R" is only ever announced once
every change up to R has been queued before it, whatever the order in which the store's
notifications and the revision read arrive.

A slow consumer never makes a queue grow without bound: beyond `MAX_PENDING` queued revisions
its queue collapses to the newest one (the state of the world), and the revisions in between are
skipped for that stream only. Revisions still only increase.

`end_all` ends every stream with a reason (the replica stops, or loses its store); streams opened
afterwards end at once with the same reason, until `reopen` (the store is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from smtpconfig.core.aio import stop_task
from smtpconfig.domain.profiles import StoredProfile

log = logging.getLogger(__name__)

# Queued revisions one stream may have before its queue collapses to the newest.
MAX_PENDING = 64


class ProfileSource(Protocol):
    """What a watch follows: `ProfileService`, or an edge's profile followed from its upstream
    (whose revisions are `StoredProfile`-like: they have `revision`)."""

    @property
    def current(self) -> Any: ...

    def on_change(self, listener: Callable[[Any], None]) -> Callable[[], None]: ...

    async def catch_up(self) -> int: ...

    async def changes_after(self, after: int) -> list[Any] | None: ...


@dataclass(frozen=True)
class Progress:
    """No change of the profile up to the store's revision `revision`."""

    revision: int


@dataclass(frozen=True)
class Ended:
    """The stream must end: `reason` says why, for the caller (UNAVAILABLE: reconnect)."""

    reason: str


Event = StoredProfile | Progress | Ended


class Subscription:
    """One stream's queue of what to send, bounded by collapsing to the newest revision."""

    def __init__(self) -> None:
        self._pending: list[StoredProfile | Progress] = []
        self._ended: Ended | None = None
        self._ready = asyncio.Event()
        self.collapsed = 0  # how many times this consumer was too slow, for the record

    def put(self, event: StoredProfile | Progress) -> None:
        if len(self._pending) >= MAX_PENDING:
            newest = [e for e in (*self._pending, event) if isinstance(e, StoredProfile)][-1:]
            self._pending = [*newest, *([event] if isinstance(event, Progress) else [])]
            self.collapsed += 1
        else:
            self._pending.append(event)
        self._ready.set()

    def end(self, ended: Ended) -> None:
        self._ended = ended
        self._ready.set()

    async def next(self) -> Event:
        """The next thing to send; an end comes before anything still queued."""
        while self._ended is None and not self._pending:
            self._ready.clear()
            await self._ready.wait()
        if self._ended is not None:
            return self._ended
        return self._pending.pop(0)


class ProfileWatch:
    """The subscriptions of one replica and their shared progress clock."""

    def __init__(self, profiles: ProfileSource, progress_seconds: float) -> None:
        self._profiles = profiles
        self._progress_seconds = progress_seconds
        self._subscriptions: set[Subscription] = set()
        self._ended: Ended | None = None
        self._ticker: asyncio.Task | None = None
        self._stop_listening = profiles.on_change(self._changed)

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="watch-progress")

    async def stop(self, reason: str) -> None:
        """End every stream with `reason` and stop the progress clock."""
        self.end_all(reason)
        await stop_task(self._ticker)
        self._stop_listening()

    @property
    def profiles(self) -> ProfileSource:
        return self._profiles

    @property
    def streams(self) -> int:
        return len(self._subscriptions)

    @contextlib.contextmanager
    def open(self):
        """A subscription for the duration of a stream."""
        subscription = Subscription()
        if self._ended is not None:
            subscription.end(self._ended)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def end_all(self, reason: str) -> None:
        """End every stream, and every stream opened until `reopen`, with `reason`."""
        self._ended = Ended(reason)
        for subscription in self._subscriptions:
            subscription.end(self._ended)

    def end_open(self, reason: str) -> None:
        """End the streams open now with `reason`; streams opened afterwards are served."""
        ended = Ended(reason)
        for subscription in self._subscriptions:
            subscription.end(ended)

    def reopen(self) -> None:
        """Serve streams again (the store is back after `end_all`)."""
        self._ended = None

    def _changed(self, stored: StoredProfile) -> None:
        for subscription in self._subscriptions:
            subscription.put(stored)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self._progress_seconds
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not self._subscriptions:
                continue
            try:
                revision = await self._profiles.catch_up()
            except Exception as error:  # noqa: BLE001 - no progress this time; changes still flow
                log.warning("WatchSmtp progress: the store's revision could not be read (%s)", type(error).__name__)
                continue
            for subscription in self._subscriptions:
                subscription.put(Progress(revision))
