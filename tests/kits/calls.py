"""Calls as identified callers make them: bearer-token identities with a policy (alice and bob hold
every permission, carol only `smtp:read`), request ids, a call that asserts its status and the
echoed request id, and the whole audit trail read back page by page."""

from __future__ import annotations

import uuid

import grpc

from smtpconfig.api.auth import token_hash
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc

# Planted: a test that searches logs, replies or records for secrets searches for these too.
ALICE_TOKEN = "PLANTED-alice-bearer-2b71e0"
BOB_TOKEN = "PLANTED-bob-bearer-94c3aa"
CAROL_TOKEN = "PLANTED-carol-bearer-5e08d1"

# Server settings (ServerThread/ServerProcess keyword arguments) for the three identities.
CALLERS = dict(
    tokens=(("alice", token_hash(ALICE_TOKEN)), ("bob", token_hash(BOB_TOKEN)), ("carol", token_hash(CAROL_TOKEN))),
    policy=(("alice", ("*",)), ("bob", ("*",)), ("carol", ("smtp:read",))),
)

OK = grpc.StatusCode.OK


def rid(label: str) -> str:
    """A fresh request id the server accepts as given (letters, digits, . _ : -)."""
    return f"{label}-{uuid.uuid4().hex[:12]}"


def invoke(method, request, token: str | None, request_id: str, code: grpc.StatusCode = OK, timeout: float = 30):
    """Call with `token` and `x-request-id`; assert the status and that the trailer echoes the id."""
    metadata = [("x-request-id", request_id)]
    if token is not None:
        metadata.append(("authorization", f"Bearer {token}"))
    try:
        response, call = method.with_call(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as error:
        assert error.code() == code, f"{error.code()}: {error.details()}"
        assert dict(error.trailing_metadata() or ())["x-request-id"] == request_id
        return error
    assert code == OK, f"expected {code}, the call succeeded"
    assert dict(call.trailing_metadata())["x-request-id"] == request_id
    return response


def list_records(channel: grpc.Channel, token: str, page_size: int = 1000) -> list[audit_pb.AuditRecord]:
    """Every record, page by page."""
    stub = audit_grpc.AuditServiceStub(channel)
    found: list[audit_pb.AuditRecord] = []
    page_token = ""
    while True:
        page = stub.ListAuditRecords(
            audit_pb.ListAuditRecordsRequest(page_size=page_size, page_token=page_token),
            metadata=[("authorization", f"Bearer {token}")], timeout=10,
        )
        found += page.records
        if not page.next_page_token:
            return found
        page_token = page.next_page_token
