"""One table from domain exceptions to gRPC status codes, with rich error details.

Servicer methods raise domain exceptions and never build statuses themselves; `smtpconfig.api.calls`
turns what they raise into a status with this table.

The status goes back in trailers, and clients refuse trailers past a limit (grpc's default
`grpc.max_metadata_size` is 8 KiB; over it the caller sees RESOURCE_EXHAUSTED instead of our
answer). Callers choose how many fields a request breaks and how long the names they quote are,
so the message and the BadRequest detail are kept within a budget: the first violations, each
field and description cut to a few hundred characters, then one more saying how many were left
out. Both together stay under about 5 KiB of trailer, however the request was made.

grpcio-status (`grpc_status.rpc_status.to_status`) turns the `google.rpc.Status` into the code,
message and `grpc-status-details-bin` trailer the call is aborted with, as grpc's examples do.
"""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]  # ships no type information

from smtpconfig.core.clip import one_line
from smtpconfig.core.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SmtpConfigError,
    Unauthenticated,
    Unavailable,
)

STATUS_FOR: dict[type[SmtpConfigError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

MAX_VIOLATIONS = 50
# Bytes: of the serialized BadRequest (sent base64, 4/3 of this), and of the message (sent
# percent-encoded, up to 3 times this when it is not ASCII).
_DETAIL_BYTES = 2048
_MESSAGE_BYTES = 512
_FIELD_CHARS = 128
_DESCRIPTION_CHARS = 256


def _code_for(error: SmtpConfigError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.UNKNOWN


def _within(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "…"


def _bad_request(violations: list[FieldViolation]) -> tuple[error_details_pb2.BadRequest, list[str]]:
    """The BadRequest detail within budget, and the violations it lists as `field: description`."""
    detail = error_details_pb2.BadRequest()
    listed: list[str] = []
    size = 0
    for v in violations[:MAX_VIOLATIONS]:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=one_line(v.field, _FIELD_CHARS), description=one_line(v.description, _DESCRIPTION_CHARS)
        )
        size += item.ByteSize() + 3  # its tag and length
        if size > _DETAIL_BYTES:
            break
        detail.field_violations.append(item)
        listed.append(f"{item.field}: {item.description}")
    left_out = len(violations) - len(listed)
    if left_out:
        detail.field_violations.add(description=f"and {left_out} more violations, not listed")
    return detail, listed


def _summary(listed: list[str], total: int) -> str:
    """The message of an INVALID_ARGUMENT: as many violations as fit, then how many did not."""
    shown: list[str] = []
    size = 0
    for text in listed:
        size += len(text.encode()) + 2
        if shown and size > _MESSAGE_BYTES:
            break
        shown.append(text)
    message = _within("; ".join(shown), _MESSAGE_BYTES)
    return message + (f"; and {total - len(shown)} more" if total > len(shown) else "")


def to_rpc_status(error: SmtpConfigError) -> grpc.Status:
    """The status that answers `error`: its code, its message (`details`), and the rich details
    as the trailer that carries them."""
    code = _code_for(error)
    message = _within(one_line(str(error), _MESSAGE_BYTES), _MESSAGE_BYTES)
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(error, InvalidArgument):
        detail, listed = _bad_request(error.violations)
        status.details.add().Pack(detail)
        message = _summary(listed, len(error.violations)) if listed else message
        status.message = message
    elif isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)
