"""The audit trail: one record per change, test and resolution, stored next to the profile.

A record says who called, which method, when, which fields or provider changed (or which
credentials were revealed), the outcome and the request id. It never holds a value: the fields
are names, and messages are the domain's, which are written never to hold one.

Names and messages can still quote what a caller sent (a field path, a `ProfileField`, a provider
name), and callers are not trusted to keep that short: `encode` stores each such text as one line
of at most `MAX_TEXT` characters (`MAX_MESSAGE` for the message), marked where it was cut, and at
most `MAX_FIELDS` field names, so no request can make a record much larger than a few kilobytes.

Changes write their record in the same store transaction as the change itself. Everything else
(tests, resolutions, refused calls) goes through `AuditLog.append`, which commits the records of
calls that end together in one write (a group commit), so auditing every resolution costs one
fsync per batch rather than one per call. A call's answer waits for its record: a resolution
whose record cannot be written is not answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from smtpconfig.core.clip import one_line
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


def encode(
    identity: str, method: str, request_id: str, outcome: str,
    fields: Sequence[str] = (), provider: int = 0, message: str = "", at: int | None = None,
) -> AuditEntry:
    """The stored form of a record; `at` in microseconds since the epoch, now when None."""
    when = time.time_ns() // 1000 if at is None else at
    names = [one_line(name, MAX_TEXT) for name in fields[:MAX_FIELDS]]
    if len(fields) > MAX_FIELDS:
        names.append(f"…and {len(fields) - MAX_FIELDS} more")
    record = [one_line(identity, MAX_TEXT), method, request_id, outcome, names, provider, one_line(message, MAX_MESSAGE)]
    return when, _ENCODER.encode(record).encode()


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
    sequence: int = field(default=0, compare=False)

    def entry(self) -> AuditEntry:
        """The stored form."""
        return encode(self.identity, self.method, self.request_id, self.outcome, self.fields,
                      self.provider, self.message, at=micros(self.time))

    @classmethod
    def from_entry(cls, sequence: int, at: int, data: bytes) -> AuditRecord:
        identity, method, request_id, outcome, fields, provider, message = json.loads(data)
        when = _EPOCH + timedelta(microseconds=at)
        return cls(when, identity, method, request_id, outcome, tuple(fields), provider, message, sequence)


class AuditLog:
    """Appends and reads audit records in a `Store`."""

    def __init__(self, store: Store, on_record=None) -> None:
        self._store = store
        self._pending: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        self._flushing = False
        # Told of each record's outcome (metrics); never sees more than the outcome.
        self._on_record = on_record or (lambda outcome: None)

    async def append(self, record: AuditRecord) -> None:
        """Store `record`; returns once it is committed."""
        await self.append_entry(record.entry(), record.outcome)

    async def append_entry(self, entry: AuditEntry, outcome: str) -> None:
        """Store an encoded record (see `encode`); returns once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        self._on_record(outcome)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        # Whatever arrives while a batch is being written forms the next batch.
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._store.append_audit([entry for entry, _ in batch])
                except Exception as error:  # noqa: BLE001 - every waiting call hears of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flushing = False

    async def read(self, *, after: int = 0, since: datetime | None = None, limit: int = 500) -> list[AuditRecord]:
        """Records with a sequence above `after`, written at or after `since`, oldest first."""
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self._store.read_audit(after, micros(since) if since else None, limit)
        return [AuditRecord.from_entry(seq, at, data) for seq, at, data in rows]


    async def prune(self, keep_days: float, now: datetime | None = None) -> int:
        """Delete records older than `keep_days`; returns how many went."""
        now = now or datetime.now(UTC)
        return await self._store.prune_audit(micros(now - timedelta(days=keep_days)))
