"""WatchSmtp: the profile as GetSmtp shows it, pushed on every change (`smtpconfig.domain.watch`).

What a stream sends first depends on `after_revision` (R), against the store's revision S read when
the stream starts and the current profile's revision P:

- R = 0: SNAPSHOT of the current profile (revision P; no profile and revision S while none is
  stored);
- R > S: RESYNC, the current profile: R is no revision of this store (another cluster's, or a
  backup restored since);
- R >= P: PROGRESS at S at once, so the client knows it is current;
- R < P: every revision after R as a CHANGE, or RESYNC when the store no longer has them all.

Then a CHANGE per revision this replica takes up, and a PROGRESS at least every
`watch_progress_seconds`. Revisions never decrease on a stream: a CHANGE is always newer than
what came before it; a PROGRESS may repeat the revision before it when nothing was written since.

Every stream ends UNAVAILABLE, which clients retry: at its age limit (`watch_max_age_seconds`,
±10% so that reconnections spread out and load rebalances over replicas), when the replica stops
or loses its store. The client reconnects with the last revision it got and misses nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc

from smtpconfig.api import calls, convert
from smtpconfig.api.calls import rpc
from smtpconfig.core.errors import InvalidArgument, Unavailable, violation
from smtpconfig.domain.profiles import StoredProfile
from smtpconfig.domain.watch import Ended, ProfileWatch, Progress
from smtpconfig.v2 import config_service_pb2 as v2

Event = v2.WatchSmtpEvent
AGE_LIMIT = "stream age limit; reconnect with AfterRevision"


class WatchSmtpV2:
    """The WatchSmtp method of `smtpconfig.v2.ConfigService` (mixed into its servicer)."""

    guard: Any
    _watch: ProfileWatch | None
    _watch_max_age: float

    def _watch_event(self, kind: int, stored: StoredProfile | None, revision: int) -> v2.WatchSmtpEvent:
        if stored is None:
            return Event(kind=kind, revision=revision)  # type: ignore[arg-type]  # the enum's int
        return Event(
            kind=kind, profile=convert.profile_to_v2(stored.profile), etag=stored.etag,  # type: ignore[arg-type]
            update_time=convert.timestamp(stored.updated_at), revision=stored.revision,
        )

    @rpc("smtp:watch", audit=True, stream=True)
    async def WatchSmtp(self, request: v2.WatchSmtpRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[Event]:
        watch = self._watch
        if watch is None:
            raise Unavailable("WatchSmtp is not served by this server")
        after = request.after_revision
        if after < 0:
            raise InvalidArgument([violation("AfterRevision", "must be 0 or a revision a WatchSmtp stream sent")])
        calls.current().note(message=f"watch after revision {after}" if after else "watch from a snapshot")
        deadline = asyncio.get_running_loop().time() + self._watch_max_age * random.uniform(0.9, 1.1)
        with watch.open() as subscription:
            first = await self._first(watch, after)
            last = first[-1].revision
            for event in first:
                yield event
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        next_event = await subscription.next()
                except TimeoutError:
                    raise Unavailable(AGE_LIMIT) from None
                if isinstance(next_event, Ended):
                    raise Unavailable(next_event.reason)
                if isinstance(next_event, Progress):
                    if next_event.revision >= last:
                        last = next_event.revision
                        yield Event(kind=Event.KIND_PROGRESS, revision=last)
                elif next_event.revision > last:
                    last = next_event.revision
                    yield self._watch_event(Event.KIND_CHANGE, next_event, last)

    async def _first(self, watch: ProfileWatch, after: int) -> list[v2.WatchSmtpEvent]:
        """What a stream starts with (see the module docstring)."""
        profiles = watch.profiles
        store_revision = await profiles.catch_up()
        current = profiles.current
        if after == 0:
            return [self._watch_event(Event.KIND_SNAPSHOT, current, store_revision)]
        if after > store_revision:
            return [self._watch_event(Event.KIND_RESYNC, current, store_revision)]
        if current is None or after >= current.revision:
            return [Event(kind=Event.KIND_PROGRESS, revision=store_revision)]
        missed = await profiles.changes_after(after)
        if not missed:  # None: the history is gone; empty cannot be, as P > R, but is treated alike
            return [self._watch_event(Event.KIND_RESYNC, current, store_revision)]
        return [self._watch_event(Event.KIND_CHANGE, stored, stored.revision) for stored in missed]
