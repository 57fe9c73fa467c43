"""What happens around every RPC: identity, permission, rate limit, deadline, errors, audit, metrics.

Each servicer method is declared with `@rpc(permission, ...)`; nothing answers without one, so
a method cannot be left open by forgetting it. The servicer's `guard` (one per server) does the
work, in this order:

1. a request id: the caller's `x-request-id` when it is a sane token, else a new one; it goes
   onto every log line and audit record of the call. It comes back in the `x-request-id`
   trailer of every refusal and error, and of every answer to a caller who sent one (the id
   used in its stead when it was unusable). A successful answer to a caller who sent none
   carries none: a value unique to each call cost every call a header to encode and decode on
   both sides (about 5% of GetSmtp's calls per second at 64 in flight), and a caller who wants
   to find its calls in the server's logs and audit trail names them itself;
2. the caller's identity (`smtpconfig.api.auth`), else UNAUTHENTICATED;
3. the method's permission in the policy, else PERMISSION_DENIED;
4. a slot among the calls served at once: at most `max_concurrent_rpcs` in all and
   `max_concurrent_rpcs_per_identity` for each identity, else RESOURCE_EXHAUSTED;
5. the per-identity rate limit of limited methods, else RESOURCE_EXHAUSTED with a RetryInfo;
6. the one request message, read and decoded only now (`smtpconfig.api.handlers` registers every
   method so that nothing is read before the checks above): none, or bytes that do not decode
   as the request type, are INVALID_ARGUMENT; anything sent after it is not read, as grpcio's
   own unary handlers do;
7. the method itself. Reading the message, and the method unless it is declared
   `waits=False`, run under the server's default deadline when the caller set none (kept by one
   task for all calls, `smtpconfig.api.deadlines`);
8. domain errors mapped to statuses by `smtpconfig.api.status`; anything else is INTERNAL with a
   fixed message;
9. for audited methods an audit record, success or not, before the answer leaves; changes
   write theirs with the change itself (`Call.change_record`). A call that ended before step 7,
   whatever its code, is recorded only up to its caller's cap (`smtpconfig.api.refusals`);
10. the call's count and latency by method and status code.

Steps 1-5 need nothing the caller sends after its headers, so a caller without an identity or a
permission is refused at once and holds nothing, and a caller that opens calls and never sends
their message holds at most its identity's share of slots, each until the default deadline.

Server-streaming methods (`@rpc(..., stream=True)`, WatchSmtp) pass the same steps 1-3, then
take a stream slot of their identity (`max_streams_per_identity`) instead of a call slot: a stream
lives for minutes and must not use up the slots of the identity's unary calls. Only reading the
request runs under the default deadline. Audited streams get two records, not one per message:
one when the stream starts (before its first message leaves), one when it ends (how, and how many
messages were sent).

Health and reflection are not servicers of ours and stay open to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from smtpconfig.api.auth import Authenticator, Identity, Policy
from smtpconfig.api.deadlines import Deadlines
from smtpconfig.api.limits import RateLimiter
from smtpconfig.api.refusals import RefusalRecords
from smtpconfig.api.status import to_rpc_status
from smtpconfig.core.bidi import has_bidi_control
from smtpconfig.core.clip import one_line
from smtpconfig.core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    SmtpConfigError,
    Unavailable,
    violation,
)
from smtpconfig.ops.audit import AuditLog, clipped, encode
from smtpconfig.ops.logs import CALL

log = logging.getLogger(__name__)

REQUEST_ID = "x-request-id"
# Audit records of refused calls that carry no identity at all, per second (and burst).
ANONYMOUS_RECORDS_PER_SECOND = 10.0
ANONYMOUS_RECORDS_BURST = 100
# The RetryInfo of a call refused for want of a slot: slots free as calls end, which the server
# cannot foresee, so this is a hint to back off rather than a promise.
BUSY_RETRY_AFTER = 1.0
# Request metadata naming the local caller an edge calls for (trusted from `edge_identities` only).
ON_BEHALF_OF = "x-smtpconfig-on-behalf-of"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
# Request ids the server makes: unique per process start, then a counter (cheaper than random
# bytes per call; they only need to tell calls apart, not be unguessable).
_ID_PREFIX = os.urandom(4).hex() + "-"
_ids = itertools.count(1)


@dataclass(slots=True)
class Call:
    """The call in progress, as logs and the audit trail see it."""

    method: str
    request_id: str
    identity: str = ""
    # What the audit record names: fields changed or revealed, the provider changed, a summary.
    fields: tuple[str, ...] = ()
    provider: int = 0
    message: str = ""
    # The change wrote its record itself, atomically with the change.
    recorded: bool = False
    # The policy, once the caller is identified: `holds` asks it only when a method wants to know.
    policy: Policy | None = None
    # The method itself has begun: from here on the call may have acted, so its record is never capped.
    started: bool = False
    # The replica serving the call, named in the records of the changes it makes.
    replica: str = ""
    # The record the change stores with itself, once made (copied to standard output once committed).
    change_entry: tuple[int, bytes] | None = None
    # The local caller an edge (one of `edge_identities`) calls for, named in the record with it.
    on_behalf_of: str = ""
    # Trailing metadata the method adds to the answer (besides the request id).
    trailers: tuple[tuple[str, str], ...] = ()
    # The caller sent an `x-request-id` (kept, or replaced when unusable): the id comes back on
    # every answer.
    echo_id: bool = False

    @property
    def recorded_identity(self) -> str:
        """Who the audit record names: the caller, and the local caller an edge calls for."""
        return f"{self.identity} for {self.on_behalf_of}" if self.on_behalf_of else self.identity

    def change_record(self, fields: Sequence[str] = (), provider: int = 0):
        """The audit entry a change stores together with itself (outcome OK)."""
        self.fields, self.provider, self.recorded = tuple(fields), provider, True
        self.change_entry = encode(self.identity, self.method, self.request_id, "OK", self.fields, provider,
                                   self.message, replica=self.replica)
        return self.change_entry

    def note(self, *, fields: Sequence[str] = (), provider: int = 0, message: str = "") -> None:
        """What the audit record of this call should name besides who, when and the outcome."""
        self.fields, self.provider, self.message = tuple(fields), provider, message

    def holds(self, permission: str) -> bool:
        """Whether the caller also holds `permission`, for methods whose answer depends on more
        than the permission they need (which the guard has checked already)."""
        return self.policy is not None and self.policy.allows(self.identity, permission)


def current() -> Call:
    """The call being served on this task. Servicers run only inside `Guard.run`, which sets it, so
    its absence is a programming error, not a request's."""
    call = CALL.get()
    if call is None:
        raise RuntimeError("no gRPC call is being served on this task (a servicer ran outside Guard.run)")
    return call


@dataclass(frozen=True, slots=True)
class RpcSpec:
    permission: str
    audit: bool
    limit: str | None
    waits: bool
    stream: bool = False


@dataclass(slots=True)
class _Progress:
    """What the end of a call needs to know: the status code it ended with (for the metrics) and
    the slot it holds, if it took one."""

    code: str = "OK"
    slot: str | None = None


def _call(method: str, metadata, replica: str = "") -> Call:
    """The call's record, with the caller's `x-request-id` when it is a sane token, else a new one."""
    for key, value in metadata:
        if key == REQUEST_ID:
            # Only -bin keys carry bytes. A caller whose id is unusable gets the one used instead.
            usable = isinstance(value, str) and _SANE_REQUEST_ID.match(value)
            return Call(method, value if usable else _new_id(), replica=replica, echo_id=True)
    return Call(method, _new_id(), replica=replica)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):x}"


class Guard:
    """The checks and records around every call of one server."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        policy: Policy,
        audit: AuditLog,
        metrics,
        limiters: Mapping[str, RateLimiter],
        default_deadline: float,
        max_concurrent: int = 0,
        max_concurrent_per_identity: int = 0,
        max_streams_per_identity: int = 0,
        edge_identities: Iterable[str] = (),
    ) -> None:
        self._authenticator = authenticator
        self._edges = frozenset(edge_identities)
        self._policy = policy
        self._audit = audit
        self._metrics = metrics
        self._limiters = dict(limiters)
        self._default_deadline = default_deadline
        self._deadlines = Deadlines(default_deadline)
        # `limiters["refusals"]`: how many refusals per identity get an audit record.
        self._refusals = RefusalRecords(
            RateLimiter(ANONYMOUS_RECORDS_PER_SECOND, ANONYMOUS_RECORDS_BURST), self._limiters["refusals"], metrics
        )
        # Calls in progress, in all and by identity; 0 as a limit means none. One event loop
        # serves every call, so plain counters need no lock.
        self._max_concurrent = max_concurrent
        self._max_per_identity = max_concurrent_per_identity
        self._in_progress = 0
        self._in_progress_by: dict[str, int] = {}
        # Open server streams by identity, counted apart from the calls above.
        self._max_streams_per_identity = max_streams_per_identity
        self._streams_by: dict[str, int] = {}

    async def close(self) -> None:
        """Stop the default deadlines' task (once the server has stopped)."""
        await self._deadlines.close()

    async def run(
        self, spec: RpcSpec, name: str, method, decode: Callable[[bytes], Any], context: grpc.aio.ServicerContext
    ):
        """Serve one call of `method` (the servicer's bound method, named `name` in logs, metrics
        and the audit trail) whose request message `decode` turns from bytes into the request."""
        started = time.perf_counter()
        metadata = context.invocation_metadata() or ()
        call = _call(name, metadata, self._audit.replica)
        token = CALL.set(call)
        progress = _Progress()
        try:
            try:
                self._admit(progress, call, spec, metadata, context)
                response = await self._serve(call, spec, method, decode, context)
            except SmtpConfigError as error:
                await self._refuse(progress, call, spec, error, context)
            if spec.audit:
                await self._record_outcome(progress, call, spec, context)
            if call.echo_id:
                context.set_trailing_metadata(((REQUEST_ID, call.request_id), *call.trailers))
            elif call.trailers:
                context.set_trailing_metadata(call.trailers)
            return response
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            progress.code = "CANCELLED"
            await self._record_cancelled(call, spec)
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence for callers
            await self._fail(progress, call, error, context)
        finally:
            if progress.slot is not None:
                self._give_slot(progress.slot)
            CALL.reset(token)
            self._metrics.rpc(name, progress.code, time.perf_counter() - started)

    async def stream(
        self, spec: RpcSpec, name: str, method, decode: Callable[[bytes], Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Serve one server-streaming call of `method`, an async generator of the messages."""
        started = time.perf_counter()
        metadata = context.invocation_metadata() or ()
        call = _call(name, metadata)
        token = CALL.set(call)
        progress = _Progress()
        sent = 0
        try:
            try:
                identity = self._identify(call, spec, metadata, context)
                progress.slot = self._take_stream_slot(identity.name)
                request = await self._read_within_deadline(context, decode)
                call.started = True
                async for message in method(request, context):
                    if sent == 0 and spec.audit:
                        await self._record_start(call)
                    yield message
                    sent += 1
            except SmtpConfigError as error:
                if call.started:
                    call.message = _sent_note(call, sent)
                await self._refuse(progress, call, spec, error, context)
            if spec.audit:
                await self._record(call, "OK", f"{_sent_note(call, sent)}: ended")
            if call.echo_id:
                context.set_trailing_metadata(((REQUEST_ID, call.request_id),))
        except grpc.aio.AbortError:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            progress.code = "CANCELLED"
            if call.started:
                call.message = _sent_note(call, sent)
            await self._record_cancelled(call, spec)
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence for callers
            await self._fail(progress, call, error, context)
        finally:
            if progress.slot is not None:
                self._give_stream_slot(progress.slot)
            with contextlib.suppress(ValueError):
                # A stream abandoned by its client is closed by the event loop's finaliser, in a
                # context of its own: there is nothing of ours to restore there.
                CALL.reset(token)
            self._metrics.rpc(name, progress.code, time.perf_counter() - started)

    async def _record_start(self, call: Call) -> None:
        """A stream's first record, before its first message leaves; without it, no message does."""
        try:
            await self._record(call, "OK", f"{call.message}: started")
        except Exception:  # noqa: BLE001 - a stream without its record is not served
            log.error("%s: the audit record could not be written; the stream is refused", call.method)
            raise Unavailable("the audit trail cannot be written; try again later") from None

    def _take_stream_slot(self, identity: str) -> str:
        held = self._streams_by.get(identity, 0)
        if self._max_streams_per_identity and held >= self._max_streams_per_identity:
            raise ResourceExhausted(
                f"{identity!r} has {held} streams open, the most one identity may have at once"
                " (max_watch_streams_per_identity); retry when one has ended", retry_after=BUSY_RETRY_AFTER,
            )
        self._streams_by[identity] = held + 1
        return identity

    def _give_stream_slot(self, identity: str) -> None:
        held = self._streams_by[identity] - 1
        if held:
            self._streams_by[identity] = held
        else:
            del self._streams_by[identity]

    async def _read_within_deadline(self, context: grpc.aio.ServicerContext, decode: Callable[[bytes], Any]):
        """The request of a stream, read under the caller's deadline or else the server's default;
        the stream itself then runs without the default deadline."""
        if context.time_remaining() is not None:
            return await _read(context, decode)
        task = self._deadlines.enter()
        try:
            return await _read(context, decode)
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            raise self._no_message() from None
        finally:
            self._deadlines.leave(task)

    def _no_message(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request message did not arrive within the server's default deadline of {self._default_deadline:g}s"
        )

    def _admit(
        self, progress: _Progress, call: Call, spec: RpcSpec, metadata, context: grpc.aio.ServicerContext
    ) -> None:
        """Steps 2-5, in this order: identify the caller, check its permission, take a slot, take
        from its rate limit. Each raises the domain error that refuses the call."""
        identity = self._identify(call, spec, metadata, context)
        progress.slot = self._take_slot(identity.name)
        if spec.limit is not None:
            self._take(call, spec.limit, "")

    def _identify(self, call: Call, spec: RpcSpec, metadata, context: grpc.aio.ServicerContext) -> Identity:
        """Who calls (and for whom, from a trusted edge), refused unless it holds the permission."""
        identity = self._authenticator.identify(context, metadata)
        call.identity = identity.name
        self._on_behalf(call, metadata)
        self._policy.check(identity, spec.permission)
        call.policy = self._policy
        return identity

    def take(self, limit: str, what: str) -> None:
        """Take one from the `limit` rate limit of the current call's identity (a limit that
        depends on the request, so the method asks once it has read it), or refuse the call."""
        self._take(current(), limit, f" ({what})")

    def _take(self, call: Call, limit: str, why: str) -> None:
        wait = self._limiters[limit].acquire(call.identity)
        if wait:
            self._metrics.rate_limited(call.method)
            raise ResourceExhausted(
                f"{call.identity!r} is over the {limit} rate limit{why}; retry in {_after(wait)}",
                retry_after=wait,
            )

    def _on_behalf(self, call: Call, metadata) -> None:
        """Take the local caller an edge names (`ON_BEHALF_OF`), only from an edge this server
        trusts (`edge_identities`); from anyone else the header is ignored."""
        if call.identity not in self._edges:
            return
        for key, value in metadata:
            if key == ON_BEHALF_OF and isinstance(value, str) and value and not has_bidi_control(value):
                call.on_behalf_of = one_line(value, 256)
                return

    async def _refuse(
        self, progress: _Progress, call: Call, spec: RpcSpec, error: SmtpConfigError,
        context: grpc.aio.ServicerContext,
    ) -> NoReturn:
        """Answer a domain error with its status and details (the abort raises), recorded first
        when the method is audited and the record is worth keeping."""
        status = to_rpc_status(error)
        progress.code = status.code.name
        # Domain messages are written never to hold a value, so operators see them whole.
        log.info("%s refused: %s %s", call.method, progress.code, status.details)
        if spec.audit and self._worth_recording(call, progress.code):
            try:
                await self._record(call, progress.code, _after_note(call, status.details))
            except Exception as failure:  # noqa: BLE001 - the refusal still goes out as it is
                log.error("%s: the audit record of a refused call could not be written (%s)",
                          call.method, type(failure).__name__)
        await context.abort(
            status.code, status.details,
            trailing_metadata=(*status.trailing_metadata, (REQUEST_ID, call.request_id)),
        )

    async def _record_outcome(
        self, progress: _Progress, call: Call, spec: RpcSpec, context: grpc.aio.ServicerContext
    ) -> None:
        """The audit record of an answered call (of an audited method); without it a revealing
        answer is withheld."""
        if call.recorded:
            self._metrics.audit_record("OK")
            if call.change_entry is not None:
                self._audit.changed(call.change_entry)
            return
        try:
            # `_record` without its coroutine: this runs for every answered audited call.
            pending = self._write_record(call, "OK", call.message)
            if pending is not None:
                await pending
        except Exception as error:  # noqa: BLE001 - a revealing call without its record is not answered
            progress.code = "UNAVAILABLE"
            # The audit log's own errors name the cause (a full disk) and never a value.
            why = str(error) if isinstance(error, Unavailable) else "the audit log cannot be written"
            log.error("%s: the audit record could not be written; the answer is withheld", call.method)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{why}; try again later",
                trailing_metadata=((REQUEST_ID, call.request_id),),
            )

    async def _record_cancelled(self, call: Call, spec: RpcSpec) -> None:
        if spec.audit and not call.recorded and self._worth_recording(call, "CANCELLED"):
            # The caller gave up or its deadline passed; what was started is still on record.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._record(call, "CANCELLED", _after_note(call, "the caller cancelled or its deadline passed"))
                )

    async def _fail(
        self, progress: _Progress, call: Call, error: Exception, context: grpc.aio.ServicerContext
    ) -> NoReturn:
        """An error nothing expected: INTERNAL with a fixed message, or a cancellation when the
        caller is gone already."""
        if context.done():
            # The caller's deadline passed (or it hung up) just as the answer was sent, so
            # grpc refused to send it (ExecuteBatchError from abort). Nothing failed here and
            # nobody is left to answer.
            progress.code = "CANCELLED"
            log.info("%s: the caller was gone before the answer could be sent", call.method)
            raise asyncio.CancelledError from None
        progress.code = "INTERNAL"
        # The frames say where; the message could hold anything, so it is left out.
        log.error(
            "internal error in %s: %s\n%s", call.method, type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )
        await context.abort(
            grpc.StatusCode.INTERNAL, "internal error; see the server log",
            trailing_metadata=((REQUEST_ID, call.request_id),),
        )

    def _take_slot(self, identity: str) -> str:
        """Count a call of `identity` among those in progress, or refuse it: no identity may
        take every slot, so a flood from one cannot starve the others."""
        held = self._in_progress_by.get(identity, 0)
        if self._max_concurrent and self._in_progress >= self._max_concurrent:
            raise ResourceExhausted(
                f"the server is serving {self._in_progress} calls, the most it serves at once"
                " (max_concurrent_rpcs); retry shortly", retry_after=BUSY_RETRY_AFTER,
            )
        if self._max_per_identity and held >= self._max_per_identity:
            raise ResourceExhausted(
                f"{identity!r} has {held} calls in progress, the most one identity may have at once"
                " (max_concurrent_rpcs_per_identity); retry when one has ended", retry_after=BUSY_RETRY_AFTER,
            )
        self._in_progress += 1
        self._in_progress_by[identity] = held + 1
        return identity

    def _give_slot(self, identity: str) -> None:
        self._in_progress -= 1
        held = self._in_progress_by[identity] - 1
        if held:
            self._in_progress_by[identity] = held
        else:
            del self._in_progress_by[identity]

    async def _serve(
        self, call: Call, spec: RpcSpec, method, decode: Callable[[bytes], Any], context: grpc.aio.ServicerContext
    ):
        """Read and decode the request, then answer it; without a deadline of the caller's, under
        the server's default one."""
        if context.time_remaining() is not None:
            # grpc itself ends the call when the caller's deadline passes.
            request = await _read(context, decode)
            call.started = True
            return await method(request, context)
        deadlines = self._deadlines
        task = deadlines.enter()
        try:
            request = await _read(context, decode)
            call.started = True
            if not spec.waits:
                deadlines.leave(task)  # answered from memory: nothing left to cut short
            return await method(request, context)
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            if not call.started:
                # A caller holding its call open without a message gets no more time than one
                # that is slow to be answered.
                raise self._no_message() from None
            raise DeadlineExceeded(
                f"the call took longer than the server's default deadline of"
                f" {self._default_deadline:g}s; set a deadline to allow more"
            ) from None
        finally:
            deadlines.leave(task)

    def _worth_recording(self, call: Call, code: str) -> bool:
        """A call that ended before its method started (refused, undecodable, cancelled or out of
        time while its message was awaited) did nothing and cost its caller nothing, so its record
        is subject to the per-caller cap of `smtpconfig.api.refusals`, whatever its code; once the method
        started it may have acted, so the record is always kept."""
        return call.started or self._refusals.admit(call.identity, code)

    async def _record(self, call: Call, outcome: str, message: str) -> None:
        pending = self._write_record(call, outcome, message)
        if pending is not None:
            await pending

    def _write_record(self, call: Call, outcome: str, message: str) -> asyncio.Future[None] | None:
        """Write the call's audit record (`AuditLog.write_call`): None once written, else the
        future to wait on."""
        return self._audit.write_call(
            clipped(call.recorded_identity, call.method, call.request_id, outcome, call.fields, call.provider, message)
        )


def _sent_note(call: Call, sent: int) -> str:
    """A stream's note with how many messages it sent."""
    count = f"{sent} message{'' if sent == 1 else 's'} sent"
    return f"{call.message}; {count}" if call.message else count


def _after_note(call: Call, message: str) -> str:
    """A call that ended early keeps on record what its method noted so far (a test's
    destinations), followed by how it ended."""
    return f"{call.message}: {message}" if call.message else message


async def _read(context: grpc.aio.ServicerContext, decode: Callable[[bytes], Any]):
    """The call's one request message, decoded. The bytes are never echoed: they are the
    caller's, and may hold anything."""
    message = await context.read()
    if message is grpc.aio.EOF:
        # grpcio reads the same end for a caller who sent nothing and for a call that its core
        # has ended itself (a message over max_message_bytes: the caller has RESOURCE_EXHAUSTED
        # already). Only a call still open can take its headers, so sending them tells the two
        # apart: the ended call stops here as cancelled, and is not called a caller's mistake.
        try:
            await context.send_initial_metadata(())
        except Exception:  # noqa: BLE001 - grpcio's ExecuteBatchError: the call is over
            raise asyncio.CancelledError from None
        raise InvalidArgument([violation("request", "no request message was sent; this method takes exactly one")])
    # Anything the caller sends after its one message is not read: grpcio's own unary handlers
    # answer the first message too. Waiting for the end of the request stream would cost every
    # call another read (a tenth of a cached GetSmtp's time) and tell a well-behaved caller nothing.
    try:
        return decode(message)
    except DecodeError:
        raise InvalidArgument([violation(
            "request", "the request could not be decoded: corrupt wire data, or a string field that is not UTF-8",
        )]) from None


Handler = TypeVar("Handler", bound=Callable[..., Awaitable | AsyncIterator])


def rpc(
    permission: str, *, audit: bool = False, limit: str | None = None, waits: bool = True, stream: bool = False
) -> Callable[[Handler], Handler]:
    """Declare a servicer method: the permission it needs, whether its calls are audited, which
    per-identity rate limit applies, and whether it can wait on anything (a store write, a
    backend, a relay). Methods that answer from memory (`waits=False`) run without the default
    deadline once their request is read. The servicer class names its service in `SERVICE` and
    holds the server's `Guard` in `guard`; `smtpconfig.api.handlers` serves only methods declared so,
    each through `Guard.run`, or with `stream=True` (an async generator of the messages of a
    server-streaming method) through `Guard.stream`. A unary method returns its response message,
    or that message already serialised (bytes), which is sent as it is."""
    spec = RpcSpec(permission, audit, limit, waits, stream)

    def decorate(method: Handler) -> Handler:
        method.rpc_spec = spec  # type: ignore[attr-defined]  # a function attribute, read back by the handlers
        return method

    return decorate


def _after(wait: float) -> str:
    """A wait as a person reads it, rounded up: a bucket that refills in 8 ms is not `0.0s` away."""
    if wait < 1:
        return f"{max(1, math.ceil(wait * 1000))} ms"
    return f"{math.ceil(wait * 10) / 10:.1f} s"
