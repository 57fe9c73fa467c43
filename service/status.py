"""One table from domain exceptions to gRPC status codes, with rich error details.

Servicer methods are wrapped with `grpc_errors`; they raise domain exceptions and never build
statuses themselves. Unexpected exceptions become INTERNAL with a fixed message: their text could
carry anything, so it goes to the log by type only.
"""

from __future__ import annotations

import functools
import logging
import traceback
from typing import Awaitable, Callable, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from service.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SmtpConfigError,
    Unavailable,
    Unimplemented,
)

log = logging.getLogger(__name__)

STATUS_FOR: dict[type[SmtpConfigError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}

_DETAILS_KEY = "grpc-status-details-bin"


def _code_for(error: SmtpConfigError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.UNKNOWN


def to_rpc_status(error: SmtpConfigError) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    code = _code_for(error)
    message = str(error)
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(error, InvalidArgument):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.add().Pack(detail)
        message = "; ".join(f"{v.field}: {v.description}" for v in error.violations) or message
        status.message = message
    return code, message, status


Handler = TypeVar("Handler", bound=Callable[..., Awaitable])


def grpc_errors(method: Handler) -> Handler:
    """Turn domain exceptions raised by an async servicer method into gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except SmtpConfigError as error:
            code, message, status = to_rpc_status(error)
            # Domain messages are written never to hold a value, so operators see them whole.
            log.info("%s: %s %s", method.__name__, code.name, message)
            await context.abort(code, message, trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),))
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence for callers
            # The frames say where; the message could hold anything, so it is left out.
            log.error(
                "internal error in %s: %s\n%s",
                method.__qualname__,
                type(error).__name__,
                "".join(traceback.format_tb(error.__traceback__)),
            )
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper  # type: ignore[return-value]

