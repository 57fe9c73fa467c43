"""The audit trail: one record per change, test and resolution, stored next to the profile.

A record says who called, which method, when, which fields or provider changed (or which
credentials were revealed), the outcome and the request id. It never holds a value: the fields
are names, and messages are the domain's, which are written never to hold one.

Names and messages can still quote what a caller sent (a field path, a `ProfileField`, a provider
name), and callers are not trusted to keep that short: `encode` stores each such text as one line
of at most `MAX_TEXT` characters (`MAX_MESSAGE` for the message), marked where it was cut, and at
most `MAX_FIELDS` field names, so no request can make a record much larger than a few kilobytes.

Changes write their record in the same store transaction as the change itself, so a change is
never stored without it, on every replica's view of the store. Everything else (tests,
resolutions, refused calls) goes to this replica's own append-only log (`smtpconfig.ops.audit_file`),
which writes the records of calls that end together with one write(2) (a group flush). A call's
answer waits for its record: a resolution whose record cannot be written is not answered.

`AuditLog.read` shows both together in time order. Its cursor is a pair: the last store sequence
and the last log sequence a page held (`Cursor`), so a page token resumes each source exactly
where the page left it, whatever the order in which their records' times interleave.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from smtpconfig.core.clip import one_line
from smtpconfig.ops.audit_file import AuditFile, Fields, iso_micros
from smtpconfig.store.base import AuditEntry, Store

MAX_PAGE = 1000
# What one record keeps of text a caller chose (see the module docstring).
MAX_TEXT = 256
MAX_MESSAGE = 512
MAX_FIELDS = 32


# Records are encoded on the path of every audited call, so compactly and cheaply: a JSON list in
# a fixed order, and the time as integer microseconds in a column of its own (for ranges).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def micros(when: datetime) -> int:
    """Microseconds since the Unix epoch: how the store keeps (and compares) record times."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clipped(
    identity: str, method: str, request_id: str, outcome: str,
    fields: Sequence[str] = (), provider: int = 0, message: str = "", at: int | None = None,
) -> Fields:
    """A record with the caller's texts cut to size (see the module docstring); `at` in
    microseconds since the epoch, now when None."""
    when = time.time_ns() // 1000 if at is None else at
    names = [one_line(name, MAX_TEXT) for name in fields[:MAX_FIELDS]]
    if len(fields) > MAX_FIELDS:
        names.append(f"…and {len(fields) - MAX_FIELDS} more")
    return Fields(when, one_line(identity, MAX_TEXT), method, request_id, outcome, tuple(names), provider,
                  one_line(message, MAX_MESSAGE))


def encode(
    identity: str, method: str, request_id: str, outcome: str,
    fields: Sequence[str] = (), provider: int = 0, message: str = "", at: int | None = None, replica: str = "",
) -> AuditEntry:
    """The stored form of a change record; `at` in microseconds since the epoch, now when None.
    `replica` names the replica that made the change."""
    record = clipped(identity, method, request_id, outcome, fields, provider, message, at)
    return record.at, _ENCODER.encode([
        record.identity, method, request_id, outcome, list(record.fields), provider, record.message, replica,
    ]).encode()


@dataclass(frozen=True)
class AuditRecord:
    """One audited call, as read back."""

    time: datetime
    identity: str
    method: str
    request_id: str
    outcome: str
    fields: tuple[str, ...] = ()
    provider: int = 0
    message: str = ""
    # The store's sequence for a change record, the replica log's for any other.
    sequence: int = field(default=0, compare=False)
    # The replica that wrote it (for a change, that made it; "" for changes stored before 0.12).
    replica: str = ""
    # A change record (kept in the store with its change) or a call record (in a replica's log).
    change: bool = False

    def entry(self) -> AuditEntry:
        """The stored form of a change record."""
        return encode(self.identity, self.method, self.request_id, self.outcome, self.fields,
                      self.provider, self.message, at=micros(self.time), replica=self.replica)

    @classmethod
    def from_entry(cls, sequence: int, at: int, data: bytes) -> AuditRecord:
        identity, method, request_id, outcome, fields, provider, message, *rest = json.loads(data)
        when = _EPOCH + timedelta(microseconds=at)
        return cls(when, identity, method, request_id, outcome, tuple(fields), provider, message, sequence,
                   rest[0] if rest else "", True)

    @classmethod
    def from_line(cls, doc: dict) -> AuditRecord:
        return cls(_EPOCH + timedelta(microseconds=doc["at"]), doc.get("identity", ""), doc.get("method", ""),
                   doc.get("request_id", ""), doc.get("outcome", ""), tuple(doc.get("fields", ())),
                   doc.get("provider", 0), doc.get("message", ""), doc["seq"], doc.get("replica", ""), False)


@dataclass(frozen=True)
class Cursor:
    """Where a page of the combined trail ended: the last store and log sequences it held."""

    store: int = 0
    log: int = 0

    def token(self) -> str:
        return f"{self.store}.{self.log}"

    @classmethod
    def parse(cls, token: str) -> Cursor | None:
        """The cursor a `token` stands for, or None when it is not one this server gives out."""
        match = _TOKEN.fullmatch(token)
        return cls(int(match[1]), int(match[2])) if match else None


_TOKEN = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")


class AuditLog:
    """The audit trail of one replica: change records in the `Store`, the rest in its own log."""

    def __init__(self, store: Store | None, log: AuditFile, on_record=None) -> None:
        # None on an edge, which has no store: its trail is its own log alone.
        self._store = store
        self.log = log
        self.replica = log.replica
        # Told of each record's outcome (metrics); never sees more than the outcome.
        self._on_record = on_record or (lambda outcome: None)

    async def append(self, record: AuditRecord) -> None:
        """Write a call record to this replica's log; returns once it is written."""
        await self.append_call(clipped(record.identity, record.method, record.request_id, record.outcome,
                                       record.fields, record.provider, record.message, micros(record.time)))

    async def append_call(self, record: Fields) -> None:
        """Write a call record (see `clipped`); returns once it is written, raises `Unavailable`
        naming the cause when it cannot be."""
        pending = self.write_call(record)
        if pending is not None:
            await pending

    def write_call(self, record: Fields) -> asyncio.Future[None] | None:
        """`append_call` without a coroutine (`AuditFile.write`): None once written, else the
        future to wait on."""
        self._on_record(record.outcome)
        return self.log.write(record)

    async def append_entry(self, entry: AuditEntry, outcome: str) -> None:
        """A call record in the stored form of `encode` (as callers made them when every record
        went to the store), written to this replica's log like `append_call`."""
        record = AuditRecord.from_entry(0, *entry)
        await self.append_call(Fields(entry[0], record.identity, record.method, record.request_id, outcome,
                                      record.fields, record.provider, record.message))

    def changed(self, entry: AuditEntry) -> None:
        """A change and its record were committed: copy the record to standard output if asked."""
        at, data = entry
        doc = AuditRecord.from_entry(0, at, data)
        line = _ENCODER.encode({
            "change": True, "time": iso_micros(at), "replica": doc.replica, "identity": doc.identity,
            "method": doc.method, "request_id": doc.request_id, "outcome": doc.outcome,
            "fields": list(doc.fields), "provider": doc.provider, "message": doc.message,
        })
        self.log.copy_out([line.encode()])

    async def read(
        self, *, after: Cursor = Cursor(), since: datetime | None = None, limit: int = 500
    ) -> tuple[list[AuditRecord], Cursor, bool]:
        """Change records and this replica's call records after `after`, written at or after
        `since`, in time order: (records, the cursor after them, whether more may follow)."""
        limit = max(1, min(limit, MAX_PAGE))
        since_micros = micros(since) if since else None
        rows = await self._store.read_audit(after.store, since_micros, limit) if self._store else []
        docs = await self.log.read_async(after.log, since_micros, limit)
        changes = [AuditRecord.from_entry(seq, at, data) for seq, at, data in rows]
        calls = [AuditRecord.from_line(doc) for doc in docs]
        merged = _merge(changes, calls)
        page = merged[:limit]
        store = max((r.sequence for r in page if r.change), default=after.store)
        log_seq = max((r.sequence for r in page if not r.change), default=after.log)
        more = len(merged) > limit or len(rows) == limit or len(docs) == limit
        return page, Cursor(store, log_seq), more

    async def prune(self, keep_days: float, now: datetime | None = None) -> int:
        """Delete change records older than `keep_days`, and rotated log files last written
        before then; returns how many records and files went."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=keep_days)
        count = await self._store.prune_audit(micros(cutoff)) if self._store else 0
        return count + self.log.prune(cutoff.timestamp())

    async def close(self) -> None:
        await self.log.close()




def _merge(changes: list[AuditRecord], calls: list[AuditRecord]) -> list[AuditRecord]:
    """Both lists, each kept in its own sequence order (so that a cursor is a prefix of each),
    interleaved by time; a change first at equal times."""
    merged, i, j = [], 0, 0
    while i < len(changes) and j < len(calls):
        if changes[i].time <= calls[j].time:
            merged.append(changes[i])
            i += 1
        else:
            merged.append(calls[j])
            j += 1
    return merged + changes[i:] + calls[j:]
