"""Floods and undecodable requests over a real channel: callers without an identity cannot starve
those with one, one identity cannot take every slot, and a request that does not decode is
INVALID_ARGUMENT, but only for a caller who may call the method at all.

A silent call is what a hostile client can open on any unary method: a client-streaming call
(`stream_unary` on the method's path) that sends its headers and never a message. The flood
comes from one grpc.aio channel of its own (a connection of its own: a local subchannel pool);
the callers who must still get through use another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from smtpconfig.api.audit_servicer import AuditServiceV2
from smtpconfig.api.auth import token_hash
from smtpconfig.api.provider_servicer import SecretProviderServiceV2
from smtpconfig.api.servicers import ConfigServiceV1, ConfigServiceV2
from smtpconfig.app import SERVICE_NAMES
from smtpconfig.settings import SettingsError, load
from smtpconfig.v2 import config_service_pb2 as v2
from tests.kits.calls import list_records, rid
from tests.kits.metrics import moved, scrape
from tests.kits.profiles import BASIC_V2, v2_profile
from tests.kits.support import ServerThread, short_dir, violations

Code = grpc.StatusCode
MALLORY, CAROL, READER, WRITER = (f"PLANTED-{n}-bearer-{i}" for n, i in (("mallory", "51c0"), ("carol", "8e2a"),
                                                                         ("reader", "0b7d"), ("writer", "c4f3")))
CALLERS = dict(
    tokens=tuple((name, token_hash(token)) for name, token in (
        ("mallory", MALLORY), ("carol", CAROL), ("reader", READER), ("writer", WRITER))),
    policy=(("mallory", ("smtp:read",)), ("carol", ("smtp:read",)), ("reader", ("smtp:read",)),
            ("writer", ("smtp:modify",))),
)
FLOOD = 1100
SHARE = 40
GET_SMTP = "/smtpconfig.v2.ConfigService/GetSmtp"
UPDATE_SMTP = "/smtpconfig.v2.ConfigService/UpdateSmtp"
POOL = v2.DESCRIPTOR.pool
METHODS: list[MethodDescriptor] = [m for name in SERVICE_NAMES for m in POOL.FindServiceByName(name).methods]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


# Paths of the methods whose calls are audited, as their servicers declare them with @rpc.
_SERVICERS = {cls.SERVICE: cls for cls in (ConfigServiceV1, ConfigServiceV2, SecretProviderServiceV2, AuditServiceV2)}
AUDITED = {
    _path(m) for m in METHODS
    if getattr(_SERVICERS[m.containing_service.full_name.split(".", 1)[1]], m.name).rpc_spec.audit
}


@dataclass
class Served:
    server: ServerThread
    admin: grpc.Channel  # calls as the admin: a connection of its own, apart from any flood
    plain: grpc.Channel  # no credentials: calls bring their own

    @property
    def metrics_port(self) -> int:
        assert self.server.app.metrics_port is not None
        return self.server.app.metrics_port

    def call(self, path: str, payload: bytes, token: str | None, timeout: float = 10.0, request_id: str = ""):
        """A unary call with raw bytes; the response bytes, or the error."""
        metadata = [("authorization", f"Bearer {token}")] if token else []
        if request_id:
            metadata.append(("x-request-id", request_id))
        stub = self.plain.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            return stub(payload, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            return error


@contextlib.contextmanager
def serving(prefix: str, **settings) -> Iterator[Served]:
    """A server with the test's callers and a metrics endpoint, an admin and a bare channel to it."""
    data_dir = short_dir(prefix)
    server = ServerThread(data_dir, metrics_listen="127.0.0.1:0", **CALLERS, **settings).start()
    admin, plain = server.channel(), grpc.insecure_channel(server.target)
    try:
        yield Served(server, admin, plain)
    finally:
        admin.close()
        plain.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def served() -> Iterator[Served]:
    with serving("fl", max_concurrent_rpcs=100, max_concurrent_rpcs_per_identity=SHARE, default_deadline=1.0) as s:
        s.admin.unary_unary(UPDATE_SMTP)(  # a profile, so GetSmtp answers OK
            v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)).SerializeToString(), timeout=10)
        yield s


def admin_get_smtp(s: Served) -> float:
    """Seconds an admin GetSmtp took, on its own connection; it must succeed within 1 s."""
    started = time.monotonic()
    reply = s.admin.unary_unary(GET_SMTP)(v2.GetSmtpRequest().SerializeToString(), timeout=1.0)
    assert v2.GetSmtpResponse.FromString(reply).profile.host == BASIC_V2["Host"]
    return time.monotonic() - started


async def _open_silent(channel: grpc.aio.Channel, paths: list[str], token: str | None) -> list[grpc.aio.StreamUnaryCall]:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    # No request iterator: the call is opened (headers sent) and then waits for writes that never come.
    calls = [channel.stream_unary(path, request_serializer=None, response_deserializer=None)(metadata=metadata)
             for path in paths]
    await asyncio.sleep(0)  # let the calls start
    return calls


async def _outcome(call: grpc.aio.StreamUnaryCall) -> tuple[Code, str, float]:
    try:
        await call
    except grpc.aio.AioRpcError:
        pass
    return await call.code(), await call.details() or "", time.monotonic()


def transport_cancelled(outcomes: list[tuple[Code, str, float]]) -> int:
    """How many flood calls grpc's core cancelled before any handler ran (the server counted none
    of them). Core holds the calls that arrive faster than grpcio asks for them in a queue of
    about 1,000; with 1,100 opened on one connection at once, a few sometimes go over it and end
    CANCELLED. A bare grpcio server does the same. It is not the server's answer."""
    cancelled = sum(1 for code, details, _ in outcomes if (code, details) == (Code.CANCELLED, "CANCELLED"))
    assert cancelled <= len(outcomes) // 20, f"{cancelled} of {len(outcomes)} calls were cancelled"
    return cancelled


def _flood_channel(target: str) -> grpc.aio.Channel:
    # A local subchannel pool: the flood's own connection, never shared with the admin's channel.
    return grpc.aio.insecure_channel(target, options=(("grpc.use_local_subchannel_pool", 1),))


def _rpc_counts(before, after, code: str) -> float:
    # Metrics name a method as its servicer does: v2.ConfigService/GetSmtp.
    names = [f"{m.containing_service.full_name.split('.', 1)[1]}/{m.name}" for m in METHODS]
    return sum(moved(before, after, "smtpconfig_rpc_requests_total", method=name, code=code) for name in names)


def _await_counts(s: Served, before, code: str, expected: int) -> dict:
    """The scrape once `expected` calls ended with `code` (each is counted just after it ended)."""
    deadline = time.monotonic() + 10
    while True:
        _, after = scrape(s.metrics_port)
        if _rpc_counts(before, after, code) >= expected or time.monotonic() > deadline:
            return after
        time.sleep(0.05)


# --- callers without an identity -------------------------------------------------------------------


def test_silent_calls_without_identity_cannot_starve_an_identified_caller(served: Served) -> None:
    """The issue's attack: 1,100 calls opened from one client, no token, no message, over every
    method of every service. Each is refused at once, without waiting for a message, and counted;
    the admin's GetSmtp on another connection answers within 1 s meanwhile."""
    s = served
    _, before = scrape(s.metrics_port)
    paths = [_path(METHODS[n % len(METHODS)]) for n in range(FLOOD)]

    async def attack() -> tuple[list[tuple[Code, str, float]], float, float]:
        async with _flood_channel(s.server.target) as channel:
            started = time.monotonic()
            calls = await _open_silent(channel, paths, token=None)
            outcomes = [asyncio.ensure_future(_outcome(c)) for c in calls]
            await asyncio.sleep(0.3)  # the flood has reached the server
            admin = await asyncio.get_running_loop().run_in_executor(None, admin_get_smtp, s)
            # Bounded, so that calls left waiting for ever fail the test instead of hanging it.
            return await asyncio.wait_for(asyncio.gather(*outcomes), 10), admin, started

    outcomes, admin_seconds, started = asyncio.run(attack())
    assert admin_seconds < 1.0
    refused = [n for n, (code, _, _) in enumerate(outcomes) if code == Code.UNAUTHENTICATED]
    assert {outcomes[n][1] for n in refused} == {
        "no credentials: send `authorization: Bearer <token>` or a client certificate"}
    assert len(refused) + transport_cancelled(outcomes) == FLOOD
    # Refused at once: none of them waited for the message, or for the default deadline (1 s).
    assert max(ended for _, _, ended in outcomes) - started < 1.0

    after = _await_counts(s, before, "UNAUTHENTICATED", len(refused))
    assert _rpc_counts(before, after, "UNAUTHENTICATED") == len(refused)
    audited = sum(1 for n in refused if paths[n] in AUDITED)
    # Refusals of audited methods are on the trail up to the anonymous rate, counted beyond it.
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="UNAUTHENTICATED") + moved(
        before, after, "smtpconfig_audit_records_total", outcome="UNAUTHENTICATED_NOT_RECORDED") == audited
    admin_get_smtp(s)


def test_anonymous_health_watches_cannot_starve_an_identified_caller(served: Served) -> None:
    """Health and reflection are open to all, and a health Watch stays open as long as its caller
    likes. grpcio's own concurrent-call limit would count them; ours counts only our calls."""
    s = served

    async def watch() -> float:
        async with _flood_channel(s.server.target) as channel:
            watch = channel.unary_stream("/grpc.health.v1.Health/Watch",
                                         request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                         response_deserializer=health_pb2.HealthCheckResponse.FromString)
            streams = [watch(health_pb2.HealthCheckRequest()) for _ in range(FLOOD)]
            first = await asyncio.gather(*(stream.read() for stream in streams), return_exceptions=True)
            ended = [(e.code(), e.details() or "", 0.0) for e in first if isinstance(e, grpc.aio.AioRpcError)]
            assert transport_cancelled(ended + [(Code.OK, "", 0.0)] * (FLOOD - len(ended))) == len(ended), ended[:3]
            # All the others are open and served.
            assert {m.status for m in first if not isinstance(m, Exception)} == {health_pb2.HealthCheckResponse.SERVING}
            seconds = await asyncio.get_running_loop().run_in_executor(None, admin_get_smtp, s)
            for stream in streams:
                stream.cancel()
            # The server ends its side of each cancelled watch; let it, before the server stops,
            # with this loop still open for what grpc has yet to tell it of those calls (on a
            # closed loop each would log "Event loop is closed").
            await asyncio.get_running_loop().run_in_executor(None, _await_quiet, s)
            return seconds

    assert asyncio.run(watch()) < 1.0


def _await_quiet(s: Served) -> None:
    """Wait until the server's event loop runs nothing but the server itself (its serving loop,
    the readiness check and the test harness): every call it had has ended."""
    loop = s.server._loop  # the test harness's own loop, which the server runs on
    deadline = time.monotonic() + 10

    async def busy() -> int:
        # grpcio names the tasks of a call so: "rpc_task" and "HandleExceptions[<method>]".
        return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith(("rpc_task", "HandleExceptions")))

    while asyncio.run_coroutine_threadsafe(busy(), loop).result(5):
        assert time.monotonic() < deadline, "the server still serves the cancelled calls"
        time.sleep(0.05)


# --- callers with an identity ----------------------------------------------------------------------


def test_one_identity_gets_its_share_of_slots_and_silent_calls_end_at_the_default_deadline(served: Served) -> None:
    s = served
    _, before = scrape(s.metrics_port)

    async def attack() -> tuple[list[tuple[Code, str, float]], float, dict[str, float | Code]]:
        async with _flood_channel(s.server.target) as channel:
            started = time.monotonic()
            calls = await _open_silent(channel, [GET_SMTP] * FLOOD, token=MALLORY)
            refused = [asyncio.ensure_future(_outcome(c)) for c in calls]
            # The excess is refused at once; what mallory holds stays open, waiting.
            while sum(c.done() for c in calls) < FLOOD - SHARE:
                assert time.monotonic() - started < 0.9, f"only {sum(c.done() for c in calls)} answered"
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            seen: dict[str, float | Code] = {"open": sum(not c.done() for c in calls)}
            seen["admin"] = await loop.run_in_executor(None, admin_get_smtp, s)
            carol = await loop.run_in_executor(None, s.call, GET_SMTP, b"", CAROL, 1.0)
            seen["carol"] = Code.OK if isinstance(carol, bytes) else carol.code()
            mallory = await loop.run_in_executor(None, s.call, GET_SMTP, b"", MALLORY, 1.0)
            seen["mallory"] = Code.OK if isinstance(mallory, bytes) else mallory.code()
            seen["still open"] = sum(not c.done() for c in calls)
            return await asyncio.wait_for(asyncio.gather(*refused), 10), started, seen

    outcomes, started, seen = asyncio.run(attack())
    assert seen == {"open": SHARE, "admin": seen["admin"], "carol": Code.OK, "mallory": Code.RESOURCE_EXHAUSTED,
                    "still open": SHARE}
    assert seen["admin"] < 1.0
    exhausted = [o for o in outcomes if o[0] == Code.RESOURCE_EXHAUSTED]
    ended = [o for o in outcomes if o[0] == Code.DEADLINE_EXCEEDED]
    assert len(ended) == SHARE
    assert len(exhausted) + transport_cancelled(outcomes) == FLOOD - SHARE
    assert {d for _, d, _ in exhausted} == {
        "'mallory' has 40 calls in progress, the most one identity may have at once"
        " (max_concurrent_rpcs_per_identity); retry when one has ended"}
    assert {d for _, d, _ in ended} == {"the request message did not arrive"
                                        " within the server's default deadline of 1s"}
    assert all(0.9 <= at - started < 2.5 for _, _, at in ended)

    assert isinstance(s.call(GET_SMTP, b"", MALLORY), bytes)  # her slots are free again
    after = _await_counts(s, before, "DEADLINE_EXCEEDED", SHARE)
    assert _rpc_counts(before, after, "DEADLINE_EXCEEDED") == SHARE
    assert _rpc_counts(before, after, "RESOURCE_EXHAUSTED") == len(exhausted) + 1  # and mallory's complete call


# --- the audit trail of calls that never sent their message ---------------------------------------

BURST = 5  # audit_refusals_burst of `capped`; audit_refusals_rate stays at its default, 1 per second
UPDATE = "v2.ConfigService/UpdateSmtp"


@pytest.fixture
def capped() -> Iterator[Served]:
    """A server whose every caller may hold any number of calls, so that only the audit record cap
    stands between a flood of silent calls and the trail."""
    with serving("fc", max_concurrent_rpcs=1000, max_concurrent_rpcs_per_identity=0, default_deadline=0.5,
                 audit_refusals_burst=BURST) as s:
        yield s


def _silent_updates(s: Served, timeout: float | None) -> tuple[list[tuple[Code, str, float]], float]:
    """300 UpdateSmtp calls by writer (who holds smtp:modify) that never send their message; their
    outcomes once the server has ended every one, and the seconds that took."""

    async def flood() -> list[tuple[Code, str, float]]:
        async with _flood_channel(s.server.target) as channel:
            metadata = (("authorization", f"Bearer {WRITER}"),)
            calls = [channel.stream_unary(UPDATE_SMTP, request_serializer=None, response_deserializer=None)(
                metadata=metadata, timeout=timeout) for _ in range(300)]
            return await asyncio.wait_for(asyncio.gather(*(_outcome(c) for c in calls)), 10)

    started = time.monotonic()
    outcomes = asyncio.run(flood())
    _await_quiet(s)  # the server has ended (and recorded, or not) each call it saw
    return outcomes, time.monotonic() - started


def _assert_capped(s: Served, before, code: str, elapsed: float) -> int:
    """Writer's calls that ended with `code` are on the trail only up to the cap, and counted as
    not recorded beyond it; returns how many the server saw."""
    _, after = scrape(s.metrics_port)
    seen = moved(before, after, "smtpconfig_rpc_requests_total", method=UPDATE, code=code)
    recorded = [r for r in list_records(s.admin, s.server.token) if r.identity == "writer"]
    assert {(r.method, r.outcome) for r in recorded} <= {(UPDATE, code)}
    # The default rate (1 per second) refills the burst while the flood lasts.
    assert len(recorded) <= BURST + elapsed + 1, (len(recorded), seen, elapsed)
    assert moved(before, after, "smtpconfig_audit_records_total", outcome=code) == len(recorded)
    assert moved(before, after, "smtpconfig_audit_records_total",
                 outcome=f"{code}_NOT_RECORDED") == seen - len(recorded)
    return seen


def test_silent_calls_that_the_caller_cancels_are_recorded_only_up_to_its_cap(capped: Served) -> None:
    """The reviewer's flood: writer opens UpdateSmtp calls (no rate limit) with a 0.05 s deadline
    and never sends the message. Each ends CANCELLED at the server before the method started, so
    its record costs the caller nothing and must come out of the same cap as a refusal's."""
    s = capped
    _, before = scrape(s.metrics_port)
    outcomes, elapsed = _silent_updates(s, timeout=0.05)
    assert {code for code, _, _ in outcomes} == {Code.DEADLINE_EXCEEDED}
    assert _assert_capped(s, before, "CANCELLED", elapsed) >= 50  # the flood reached the guard


def test_silent_calls_ended_by_the_default_deadline_are_recorded_only_up_to_the_cap(capped: Served) -> None:
    """The same flood without a deadline of the caller's: the server's default deadline (0.5 s)
    ends each call while its message is awaited, DEADLINE_EXCEEDED, before the method started."""
    s = capped
    _, before = scrape(s.metrics_port)
    outcomes, elapsed = _silent_updates(s, timeout=None)
    ended = [o for o in outcomes if o[0] == Code.DEADLINE_EXCEEDED]
    assert len(ended) + transport_cancelled(outcomes) == len(outcomes)
    assert _assert_capped(s, before, "DEADLINE_EXCEEDED", elapsed) == len(ended)


# --- requests that do not decode -------------------------------------------------------------------


def _string_field(message) -> FieldDescriptor | None:
    return next((f for f in message.fields if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated), None)


def _tag(number: int, wire_type: int) -> bytes:
    key, out = number << 3 | wire_type, b""
    while key > 0x7F:
        out, key = out + bytes([key & 0x7F | 0x80]), key >> 7
    return out + bytes([key])


MARKER = b"PLANTED-undecodable-\xff\xfe-9d41"


def undecodable(method: MethodDescriptor) -> dict[str, bytes]:
    """Bytes that are not a valid request of `method`, by kind: each checked against protobuf."""
    payloads = {
        "truncated varint": _tag(1, 0) + b"\x80",
        "invalid wire type": _tag(1, 7) + b"\x00",
        "length beyond the end": _tag(1, 2) + b"\x05ab",
    }
    text = _string_field(method.input_type)
    if text is not None:  # only a declared string field is checked for UTF-8
        payloads["invalid UTF-8"] = _tag(text.number, 2) + bytes([len(MARKER)]) + MARKER
    request = GetMessageClass(method.input_type)
    for payload in payloads.values():
        with pytest.raises(DecodeError):
            request.FromString(payload)
    return payloads


def test_undecodable_requests_are_invalid_argument_for_a_caller_allowed_to_call(
    served: Served, caplog: pytest.LogCaptureFixture,
) -> None:
    s = served
    caplog.set_level(logging.DEBUG)
    stored = s.call(GET_SMTP, b"", s.server.token)
    # A real update whose host is not UTF-8: the profile field, not just the outer message.
    valid = v2.UpdateSmtpRequest(profile=v2_profile({**BASIC_V2, "Host": "smtp.example.org"})).SerializeToString()
    bent = valid.replace(b"smtp.example.org", b"smtp.\xffxample.org")
    assert len(bent) == len(valid)

    for kind, payload in {**undecodable(POOL.FindMethodByName("smtpconfig.v2.ConfigService.UpdateSmtp")),
                          "invalid UTF-8 in the profile": bent}.items():
        request_id = rid("undecodable")
        refused = s.call(UPDATE_SMTP, payload, WRITER, request_id=request_id)
        assert isinstance(refused, grpc.RpcError), kind
        assert refused.code() == Code.INVALID_ARGUMENT, f"{kind}: {refused.code()} {refused.details()}"
        assert violations(refused) == [("request", "the request could not be decoded: corrupt wire data,"
                                                    " or a string field that is not UTF-8")], kind
        # Before identity and permission, nothing is read: no token, or no smtp:modify, is all they learn.
        assert s.call(UPDATE_SMTP, payload, None).code() == Code.UNAUTHENTICATED, kind
        assert s.call(UPDATE_SMTP, payload, READER).code() == Code.PERMISSION_DENIED, kind
        assert s.call(GET_SMTP, b"", s.server.token) == stored, f"{kind}: the profile changed"
        record = next(r for r in list_records(s.admin, s.server.token) if r.request_id == request_id)
        assert (record.identity, record.outcome) == ("writer", "INVALID_ARGUMENT")

    # Every method of every service, as the admin.
    for method in METHODS:
        for kind, payload in undecodable(method).items():
            refused = s.call(_path(method), payload, s.server.token)
            assert isinstance(refused, grpc.RpcError) and refused.code() == Code.INVALID_ARGUMENT, (method.full_name, kind)

    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not problems, [f"{r.name}: {r.getMessage()}" for r in problems]
    assert "PLANTED" not in caplog.text


def test_a_unary_method_reads_one_request_message(served: Served) -> None:
    s = served
    stored = s.call(GET_SMTP, b"", s.server.token)
    changed = v2.UpdateSmtpRequest(profile=v2_profile({**BASIC_V2, "Port": 2525}))
    other = v2.UpdateSmtpRequest(profile=v2_profile({**BASIC_V2, "Port": 2526}))
    stream = s.plain.stream_unary(UPDATE_SMTP, request_serializer=v2.UpdateSmtpRequest.SerializeToString,
                                  response_deserializer=v2.UpdateSmtpResponse.FromString)
    metadata = (("authorization", f"Bearer {WRITER}"),)
    with pytest.raises(grpc.RpcError) as failure:
        stream(iter(()), metadata=metadata, timeout=10)
    assert failure.value.code() == Code.INVALID_ARGUMENT, failure.value.details()
    assert violations(failure.value) == [("request", "no request message was sent; this method takes exactly one")]
    assert s.call(GET_SMTP, b"", s.server.token) == stored

    # Without the permission, the messages are never read.
    with pytest.raises(grpc.RpcError) as failure:
        stream(iter((changed, other)), metadata=(("authorization", f"Bearer {READER}"),), timeout=10)
    assert failure.value.code() == Code.PERMISSION_DENIED
    assert s.call(GET_SMTP, b"", s.server.token) == stored

    # As grpcio's own unary handlers do, the first message is the request and what follows is not
    # read: the call is answered without waiting for the end of the request stream.
    release = threading.Event()

    def first_then_hold() -> Iterator[v2.UpdateSmtpRequest]:
        yield changed
        release.wait(10)
        yield other

    started = time.monotonic()
    try:
        answer = stream(first_then_hold(), metadata=metadata)  # no deadline of its own
    finally:
        release.set()
    assert time.monotonic() - started < 0.9, "answered only at the default deadline"
    assert answer.etag and not answer.HasField("profile")  # the writer writes blind
    assert v2.GetSmtpResponse.FromString(s.call(GET_SMTP, b"", s.server.token)).profile.port == 2525


def test_a_slow_message_from_a_caller_with_a_deadline_of_its_own_is_read_until_then(served: Served) -> None:
    """The default deadline is for callers who set none; a caller's own deadline is its own."""
    s = served
    stream = s.plain.stream_unary(GET_SMTP, request_serializer=v2.GetSmtpRequest.SerializeToString,
                                  response_deserializer=v2.GetSmtpResponse.FromString)

    def late() -> Iterator[v2.GetSmtpRequest]:
        time.sleep(1.5)  # past the default deadline (1 s), within the caller's (5 s)
        yield v2.GetSmtpRequest()

    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(stream, late(), metadata=(("authorization", f"Bearer {CAROL}"),), timeout=5).result()
    assert reply.profile.host == BASIC_V2["Host"]


def test_a_request_over_max_message_bytes_is_counted_as_the_transport_ended_it(served: Served) -> None:
    """grpc's core refuses the bytes (RESOURCE_EXHAUSTED) and ends the call before the guard reads
    it; the guard must not then call it a request without a message."""
    s = served
    _, before = scrape(s.metrics_port)
    request_id = rid("too-large")
    too_large = v2.UpdateSmtpRequest(profile=v2_profile({**BASIC_V2, "SenderName": "n" * (2 << 20)}))
    refused = s.call(UPDATE_SMTP, too_large.SerializeToString(), WRITER, request_id=request_id)
    assert refused.code() == Code.RESOURCE_EXHAUSTED and "larger than max" in refused.details()
    after = _await_counts(s, before, "CANCELLED", 1)
    assert moved(before, after, "smtpconfig_rpc_requests_total", method="v2.ConfigService/UpdateSmtp",
                 code="CANCELLED") == 1
    assert _rpc_counts(before, after, "INVALID_ARGUMENT") == 0
    outcomes = [r.outcome for r in list_records(s.admin, s.server.token) if r.request_id == request_id]
    assert outcomes == ["CANCELLED"]


def test_the_per_identity_share_is_a_setting(tmp_path) -> None:
    assert load(env={}).max_concurrent_rpcs_per_identity == 100
    assert load(env={"SMTPCONFIG_MAX_CONCURRENT_RPCS_PER_IDENTITY": "0"}).max_concurrent_rpcs_per_identity == 0
    config = tmp_path / "smtpconfig.toml"
    config.write_text("max_concurrent_rpcs_per_identity = 8\n")
    assert load(env={}, config_file=config).max_concurrent_rpcs_per_identity == 8
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(SettingsError, match="max_concurrent_rpcs_per_identity must be"):
            load(env={"SMTPCONFIG_MAX_CONCURRENT_RPCS_PER_IDENTITY": bad})


def test_a_method_without_rpc_is_never_served() -> None:
    """Every method of a registered service is served through the guard, or the server does not
    start: one overridden without `@rpc`, or left to the generated base class, is refused."""
    from smtpconfig.api import handlers
    from smtpconfig.api.servicers import ConfigServiceV2
    from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

    class Careless(ConfigServiceV2):
        async def GetSmtp(self, request, context):  # no @rpc: it would answer anyone
            return v2.GetSmtpResponse()

    class Partial(v2_grpc.ConfigServiceServicer):
        SERVICE = "v2.ConfigService"

    for servicer_class in (Careless, Partial):
        servicer = servicer_class.__new__(servicer_class)  # never called: refused at registration
        with pytest.raises(TypeError, match="has no @rpc method"):
            handlers.register(handlers.MethodTable(), servicer, v2.DESCRIPTOR.services_by_name["ConfigService"])
