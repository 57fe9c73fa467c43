"""The audit trail: one record per change, test and resolution, stored next to the profile.

A record says who called, which method, when, which fields or provider changed (or which
credentials were revealed), the outcome and the request id. It never holds a value: the fields
are names, and messages are the domain's, which are written never to hold one.

Changes write their record in the same store transaction as the change itself. Everything else
(tests, resolutions, refused calls) goes through `AuditLog.append`, which commits the records of
calls that end together in one write (a group commit), so auditing every resolution costs one
fsync per batch rather than one per call. A call's answer waits for its record: a resolution
whose record cannot be written is not answered.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Sequence

from service.store.base import AuditEntry, Store

MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One audited call."""

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
        doc = {
            "time": stamp(self.time), "identity": self.identity, "method": self.method, "request_id": self.request_id,
            "outcome": self.outcome, "fields": list(self.fields), "provider": self.provider,
            "message": self.message,
        }
        return stamp(self.time), json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_entry(cls, sequence: int, data: bytes) -> "AuditRecord":
        doc = json.loads(data)
        return cls(
            time=datetime.fromisoformat(doc["time"]), identity=doc["identity"], method=doc["method"],
            request_id=doc["request_id"], outcome=doc["outcome"], fields=tuple(doc["fields"]),
            provider=doc["provider"], message=doc["message"], sequence=sequence,
        )


def stamp(when: datetime) -> str:
    """A fixed-width UTC time, so stored times compare correctly as text."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """Appends and reads audit records in a `Store`."""

    def __init__(self, store: Store, on_record=None) -> None:
        self._store = store
        self._pending: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        self._flushing = False
        # Told of each record's outcome (metrics); never sees more than the outcome.
        self._on_record = on_record or (lambda outcome: None)

    async def append(self, record: AuditRecord) -> None:
        """Store `record` durably; returns once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record.entry(), future))
        self._on_record(record.outcome)
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
        rows = await self._store.read_audit(after, stamp(since) if since else None, limit)
        return [AuditRecord.from_entry(seq, data) for seq, data in rows]


    async def prune(self, keep_days: float, now: datetime | None = None) -> int:
        """Delete records older than `keep_days`; returns how many went."""
        now = now or datetime.now(timezone.utc)
        return await self._store.prune_audit(stamp(now - timedelta(days=keep_days)))


def record_entry(
    *, identity: str, method: str, request_id: str, outcome: str,
    fields: Sequence[str] = (), provider: int = 0, message: str = "",
) -> AuditEntry:
    """The stored form of a record made now (for changes that carry their record)."""
    return AuditRecord(
        datetime.now(timezone.utc), identity, method, request_id, outcome, tuple(fields), provider, message
    ).entry()
