"""`smtpconfig.v2.AuditService`: reading the audit trail."""

from __future__ import annotations

import re
from datetime import UTC

import grpc

from smtpconfig.api import convert
from smtpconfig.api.calls import Guard, rpc
from smtpconfig.core.errors import InvalidArgument, violation
from smtpconfig.ops.audit import AuditLog, AuditRecord
from smtpconfig.v2 import audit_service_pb2 as pb
from smtpconfig.v2 import audit_service_pb2_grpc as pb_grpc

DEFAULT_PAGE = 500
_PAGE_TOKEN = re.compile(r"[0-9]{1,18}")  # a sequence number, always within SQLite's integers


def record_to_pb(record: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        sequence=record.sequence, time=convert.timestamp(record.time), identity=record.identity,
        method=record.method, request_id=record.request_id, outcome=record.outcome,
        fields=list(record.fields), provider=record.provider, message=record.message,
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
        after = 0
        if request.page_token:
            if not _PAGE_TOKEN.fullmatch(request.page_token):
                problems.append(violation("page_token", "is not a token this server gave out"))
            else:
                after = int(request.page_token)
        if request.page_size < 0:
            problems.append(violation("page_size", "must not be negative"))
        if request.HasField("since") and not 0 <= request.since.seconds <= 253402300799:
            problems.append(violation("since", "must be a time between years 1970 and 9999"))
        if request.HasField("since") and not 0 <= request.since.nanos <= 999_999_999:
            problems.append(violation("since.nanos", "must be between 0 and 999999999"))
        if problems:
            raise InvalidArgument(problems)
        size = request.page_size or DEFAULT_PAGE
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        records = await self._audit.read(after=after, since=since, limit=size)
        response = pb.ListAuditRecordsResponse(records=[record_to_pb(r) for r in records])
        if len(records) == min(size, 1000):
            response.next_page_token = str(records[-1].sequence)
        return response
