"""The store interface: versioned keys with etags, compare-and-set writes, change notifications.

Shaped so that a shared backend (etcd) can stand in for the embedded SQLite store: every write gets
a store-wide increasing revision, conditional writes compare etags, and `watch` yields every change
made through this store (and, for a shared backend, by other replicas).
"""

from __future__ import annotations

import builtins  # `list` names a method inside the store classes
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


# Pass as `expected` to write only when the key does not exist yet.
ABSENT = _Absent()


@dataclass(frozen=True)
class Revision:
    """One stored version of a key."""

    key: str
    value: bytes
    revision: int
    etag: str
    updated_at: datetime


@dataclass(frozen=True)
class Change:
    """A key was written (`revision` set) or deleted (`revision` None). `at` is the store revision
    of the change, a delete's included (0 where a store does not say): a follower that holds a
    newer version than a late change (its own write came back first) ignores it."""

    key: str
    revision: Revision | None
    at: int = 0


@dataclass(frozen=True)
class Resync:
    """A watch could not go on without a gap (history compacted or pruned, or the follower fell
    behind): re-read everything under the prefix. `revision` is the store's revision then."""

    revision: int


class EtagMismatch(Exception):
    """A conditional write found another etag (or presence) than expected; nothing was written."""


# An audit record as stored: (time in microseconds since the Unix epoch, encoded record).
AuditEntry = tuple[int, bytes]
# Called by a change with the names of what it changes (and the provider id it changes, if any)
# to get the audit record to store with it.
AuditHook = Callable[..., AuditEntry]


def make_etag(revision: int, value: bytes) -> str:
    """An opaque etag that changes with every write, even of identical bytes."""
    digest = hashlib.blake2b(value, digest_size=6, person=revision.to_bytes(8, "big")).hexdigest()
    return f"{revision:x}-{digest}"


class Store(Protocol):
    """A durable key-value store. A write returns only once it would survive a crash."""

    async def get(self, key: str) -> Revision | None:
        """The current version of `key`, or None."""

    async def list(self, prefix: str) -> list[Revision]:
        """Current versions of every key starting with `prefix`, in key order."""

    async def put(
        self, key: str, value: bytes, expected: str | _Absent | None = None, audit: AuditEntry | None = None
    ) -> Revision:
        """Write `value`. With `expected` an etag, only if the current etag is that; with `ABSENT`,
        only if the key does not exist. Raises `EtagMismatch` otherwise. `audit` is appended to
        the audit trail in the same atomic write: a change is never stored without its record."""

    async def delete(self, key: str, expected: str | None = None, audit: AuditEntry | None = None) -> bool:
        """Delete `key` (only at etag `expected` when given); True if it existed. `audit` as for
        `put`, written only when something was deleted."""

    async def import_audit(self, entries: builtins.list[AuditEntry]) -> None:
        """Append change records copied from another store (`smtpconfig store copy`), durably and
        in one write. New records are only ever written with their change (`put`, `delete`)."""

    async def read_audit(self, after: int, since: int | None, limit: int) -> builtins.list[tuple[int, int, bytes]]:
        """Up to `limit` (sequence, time, record) triples with sequence above `after` and time at
        or after `since` (microseconds), oldest first."""

    async def prune_audit(self, before: int) -> int:
        """Delete audit records written before `before`; returns how many."""

    async def ping(self) -> None:
        """Raise unless the store can take a write now (readiness)."""

    async def revision(self) -> int:
        """The store's current revision, read linearizably."""

    async def history(self, key: str, after: int) -> builtins.list[Change] | None:
        """Every change of `key` with a revision above `after`, oldest first, up to now; None when
        that history is gone (compacted or pruned). A delete's Change has `revision` None."""

    async def claim_key(self, key_id: str) -> None:
        """Record the sealing key's id on first start; raise FailedPrecondition naming the key id
        the stored data needs when it is another."""

    def settle(self) -> builtins.list[Change | Resync]:
        """Take up at once, on the event loop, the changes other processes sharing this store (the
        workers of one server) have written and not yet delivered to this one's watchers; return
        them, oldest first. Nothing for a store no other process shares (etcd replicas follow
        their watch instead)."""

    def watch(self, prefix: str, after: int | None = None) -> AsyncIterator[Change | Resync]:
        """Changes to keys under `prefix` in revision order: from now on, or with `after` first
        every change above that revision the store still holds. Where it cannot continue without
        a gap it yields `Resync` instead: the follower must re-read the prefix. Never skips."""

    async def close(self) -> None:
        """Release the store; pending writes are finished first."""
