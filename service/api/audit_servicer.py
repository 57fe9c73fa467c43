"""`smtpconfig.v2.AuditService`: reading the audit trail."""

from __future__ import annotations

from datetime import UTC

import grpc

from smtpconfig.api import convert
from smtpconfig.api.calls import Guard, rpc
from smtpconfig.core.errors import InvalidArgument, violation
from smtpconfig.ops.audit import AuditLog, AuditRecord, Cursor
from smtpconfig.v2 import audit_service_pb2 as pb
from smtpconfig.v2 import audit_service_pb2_grpc as pb_grpc

DEFAULT_PAGE = 500


def record_to_pb(record: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        sequence=record.sequence, time=convert.timestamp(record.time), identity=record.identity,
        method=record.method, request_id=record.request_id, outcome=record.outcome,
        fields=list(record.fields), provider=record.provider, message=record.message,
        replica=record.replica, change=record.change,
    )


class AuditServiceV2(pb_grpc.AuditServiceServicer):
    """`smtpconfig.v2.AuditService`."""

    SERVICE = "v2.AuditService"

    def __init__(self, audit: AuditLog, guard: Guard) -> None:
        self.guard = guard
        self._audit = audit

    @rpc("audit:read")
    async def ListAuditRecords(self, request: pb.ListAuditRecordsRequest, context: grpc.aio.ServicerContext):
        problems = []
        after: Cursor | None = Cursor()
        if request.page_token:
            after = Cursor.parse(request.page_token)
            if after is None:
                problems.append(violation("page_token", "is not a token this server gave out"))
        if request.page_size < 0:
            problems.append(violation("page_size", "must not be negative"))
        if request.HasField("since") and not 0 <= request.since.seconds <= 253402300799:
            problems.append(violation("since", "must be a time between years 1970 and 9999"))
        if request.HasField("since") and not 0 <= request.since.nanos <= 999_999_999:
            problems.append(violation("since.nanos", "must be between 0 and 999999999"))
        if problems or after is None:
            raise InvalidArgument(problems)
        size = request.page_size or DEFAULT_PAGE
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        records, cursor, more = await self._audit.read(after=after, since=since, limit=size)
        response = pb.ListAuditRecordsResponse(records=[record_to_pb(r) for r in records])
        if more:
            response.next_page_token = cursor.token()
        return response
