"""Robustness: random and malformed requests at every RPC, with hypothesis.

Every method of every service the server registers (`smtpconfig.app.SERVICE_NAMES`, looked up in
the generated descriptors, so a new RPC is fuzzed without touching this file) gets requests from
the three generators of `tests.kits.fuzzkit`: structured (built from the request descriptor), mutated
(valid requests, bent) and raw (malformed bytes). Most calls come as the admin, so validation is
reached; some bring no token, a garbage `authorization` header, a random `x-request-id` or a
deadline that runs out mid-call.

The property, after every call:

- the status is one a caller can act on: never INTERNAL, never UNKNOWN, and an OK answer decodes
  as its type;
- bytes that do not decode as the request type are INVALID_ARGUMENT for the admin, and refused
  as any other request of the caller's is (UNAUTHENTICATED) for everyone else: identity and
  permission come before the message is even read;
- the server still says SERVING, and logged no error;
- the stored profile (GetSmtp: content and etag) changed only through an OK UpdateSmtp, and the
  provider instances only through an OK provider write;
- what an OK write stored can be used: ResolveSmtp and TestSmtp on a profile just stored, and
  CheckSecret on an instance just written, answer properly too.

Nothing here leaves the machine: SMTP hosts and token endpoints the server would accept are
rewritten to loopback literals on ports nothing listens on (`Live.sanitize`), the Vault type's
Host likewise, and the ``exec`` provider type is blocked so no program can be run.

``SMTPCONFIG_FUZZ_EXAMPLES`` sets the examples per RPC and generator (default 12: 16 RPCs x 3
generators x 12 = 576 requests in ``make test``). Hunt for bugs with more, e.g.
``SMTPCONFIG_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/test_fuzz.py``. Runs are random
and write no example database; a failure prints the request, a ``@reproduce_failure`` blob and
the run's seed: ``SMTPCONFIG_FUZZ_SEED=N`` (with the same examples) draws the same requests again
on a fresh server.
"""

from __future__ import annotations

import collections
import copy
import ipaddress
import logging
import os
import random
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from smtpconfig.app import SERVICE_NAMES
from smtpconfig.domain.validation import host_problems, token_endpoint_problems
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from tests.kits.fuzzkit import (
    ADMIN_TOKEN,
    AUDIT,
    BASES,
    CALL_TIMEOUT,
    DIRECTORY,
    ETAG,
    FILE_ID,
    FILE_INSTANCE,
    MAX_MESSAGE_BYTES,
    POOL,
    PS,
    RCPT,
    REFERENCING_V2,
    V2,
    VAULT_ID,
    VAULT_INSTANCE,
    VAULT_REFERENCE,
    Caller,
    callers,
    is_map,
    messages,
    mutated,
    parse,
    raw_requests,
    request_class,
)
from tests.kits.support import ServerThread, short_dir

EXAMPLES = int(os.environ.get("SMTPCONFIG_FUZZ_EXAMPLES", "12"))
# Random per run unless given; with the same examples it draws the same requests again.
SEED = int(os.environ.get("SMTPCONFIG_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
FAMILIES = ("structured", "mutated", "raw")
METHODS: list[MethodDescriptor] = [m for name in SERVICE_NAMES for m in POOL.FindServiceByName(name).methods]

Code = grpc.StatusCode
# What a caller can act on. INTERNAL and UNKNOWN are not here: they mean the server did not know
# what happened.
ALLOWED = frozenset({
    Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.ABORTED,
    Code.UNAVAILABLE, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED, Code.RESOURCE_EXHAUSTED,
    Code.DEADLINE_EXCEEDED, Code.UNIMPLEMENTED,
})
# What the admin hears about bytes that are not a request of the method's type.
UNDECODABLE = "request: the request could not be decoded: corrupt wire data, or a string field that is not UTF-8"
# grpcio's: when the caller's deadline passes just as an answer is being sent, cygrpc cannot send
# it and logs one of these at ERROR; the caller has its DEADLINE_EXCEEDED already. No handler of
# ours runs at that point, so these records are allowed after a call whose short deadline ran
# out, and only then.
LATE_ANSWER_LOG = re.compile(
    r"^(?:ExecuteBatchError raised in core by servicer method \[(?P<path>[^\]]+)\]"
    r"|Failed sending error status from server)$"
)

# Writers: the only calls that may change what they store, and only when they answer OK.
PROFILE_WRITERS = frozenset({"smtpconfig.v1.ConfigService.UpdateSmtp", "smtpconfig.v2.ConfigService.UpdateSmtp"})
PROVIDER_WRITERS = frozenset({PS + name for name in ("CreateProvider", "UpdateProvider", "DeleteProvider")})

ADMIN = Caller((("authorization", f"Bearer {ADMIN_TOKEN}"),))
# Tests that have reset the server's state for their first example.
STARTED: set[tuple[str, str]] = set()
# How many calls ended with which code, by method (read by the last test).
SEEN: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


# --- the live server and what it holds ----------------------------------------------------------


def listening_ports() -> set[int]:
    """TCP ports something on this machine listens on (any address), from /proc."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _is_loopback_literal(host: str | None) -> bool:
    if not host:
        return False
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class ErrorRecords(logging.Handler):
    """Every ERROR record of the process (the server runs in it) and every mention of an internal
    error at any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or "internal error" in record.getMessage().lower():
            self.records.append(record)


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: bytes | None
    seconds: float


# The instances requests point at through FILE_ID and VAULT_ID, and what resolves in each.
INSTANCES = {FILE_ID: FILE_INSTANCE, VAULT_ID: VAULT_INSTANCE}
REFERENCES = {"file": {"File": "user.txt"}, "vault": VAULT_REFERENCE}


class Live:
    """The server under test, a channel to it, and what it stores as last seen."""

    def __init__(self, server: ServerThread, secrets_dir: Path, closed_port: int, errors: ErrorRecords) -> None:
        self.server = server
        self.secrets_dir = secrets_dir
        self.closed_port = closed_port
        self.errors = errors
        self.token = server.token
        self.channel = grpc.insecure_channel(server.target)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._stubs: dict[str, Callable] = {}
        self.ids: dict[int, int] = {FILE_ID: 0, VAULT_ID: 0}  # placeholder -> live Id
        self.profile: v2.GetSmtpResponse | None = None
        self.providers: providers_pb.ListProvidersResponse | None = None

    # calls

    def call(self, method: MethodDescriptor, payload: bytes, caller: Caller) -> Outcome:
        path = _path(method)
        metadata = tuple((k, v.replace(ADMIN_TOKEN, self.token)) for k, v in caller.metadata)
        if method.server_streaming:
            return self._first_event(path, payload, metadata, caller)
        stub = self._stubs.get(path)
        if stub is None:
            stub = self._stubs[path] = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        started = time.monotonic()
        try:
            response = stub(payload, metadata=metadata, timeout=caller.timeout)
        except grpc.RpcError as error:
            return Outcome(error.code(), error.details() or "", None, time.monotonic() - started)
        return Outcome(Code.OK, "", response, time.monotonic() - started)

    def _first_event(self, path: str, payload: bytes, metadata: tuple, caller: Caller) -> Outcome:
        """A stream (WatchSmtp) never ends by itself: its outcome is its first message (the
        snapshot) or its refusal; the stream is then cancelled. Its deadline is never unbounded."""
        stream = self.channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
            payload, metadata=metadata, timeout=caller.timeout or CALL_TIMEOUT,
        )
        started = time.monotonic()
        try:
            response = next(stream)
        except grpc.RpcError as error:
            return Outcome(error.code(), error.details() or "", None, time.monotonic() - started)
        except StopIteration:
            return Outcome(Code.OK, "", b"", time.monotonic() - started)
        finally:
            stream.cancel()
        return Outcome(Code.OK, "", response, time.monotonic() - started)

    def admin(self, method_name: str, request: Message) -> Message:
        method = POOL.FindMethodByName(method_name)
        outcome = self.call(method, request.SerializeToString(), ADMIN)
        assert outcome.code == Code.OK, f"{method_name}: {outcome.code.name} {outcome.details}"
        return GetMessageClass(method.output_type).FromString(outcome.response)

    def read(self) -> tuple[v2.GetSmtpResponse, providers_pb.ListProvidersResponse]:
        return self.admin(V2 + "GetSmtp", v2.GetSmtpRequest()), self._list_providers()

    def _list_providers(self) -> providers_pb.ListProvidersResponse:
        return self.admin(PS + "ListProviders", providers_pb.ListProvidersRequest())

    # state

    def ensure_instances(self) -> None:
        """The instances FILE_ID and VAULT_ID stand for: made again after a fuzzed delete."""
        self.providers = self._list_providers()
        for placeholder, doc in INSTANCES.items():
            if any(p.id == self.ids[placeholder] for p in self.providers.providers):
                continue
            taken = {p.name for p in self.providers.providers}
            name = next(n for n in (f"{doc['Name']}-{i}" for i in range(10_000)) if n not in taken)
            request = providers_pb.CreateProviderRequest()
            request.provider.CopyFrom(json_format.ParseDict({**doc, "Name": name}, providers_pb.ProviderInstance()))
            self.bind(request)
            self.sanitize(request)
            self.ids[placeholder] = self.admin(PS + "CreateProvider", request).provider.id
            self.providers = self._list_providers()

    def reset(self) -> None:
        """The starting point of each test: both instances as made (under their current names),
        and a stored profile that references the `file` one."""
        self.ensure_instances()
        for placeholder, doc in INSTANCES.items():
            current = next(p for p in self.providers.providers if p.id == self.ids[placeholder])
            request = providers_pb.UpdateProviderRequest()
            request.provider.CopyFrom(json_format.ParseDict(
                {**doc, "Id": placeholder, "Name": current.name}, providers_pb.ProviderInstance()
            ))
            self.bind(request)
            self.sanitize(request)
            self.admin(PS + "UpdateProvider", request)
        self.store_profile(REFERENCING_V2)

    def store_profile(self, doc: dict) -> None:
        request = parse(V2 + "UpdateSmtp", {"profile": doc})
        self.bind(request)
        self.admin(V2 + "UpdateSmtp", request)
        self.profile, self.providers = self.read()

    # placeholders

    def _provider_etag(self, provider_id: int) -> str:
        assert self.providers is not None
        return next((p.etag for p in self.providers.providers if p.id == provider_id), "")

    def bind(self, request: Message) -> None:
        """Put the live values in for the placeholders (Ids first: etags follow them)."""
        self._bind(request, request, etags=False)
        self._bind(request, request, etags=True)

    def _bind_value(self, value, msg: Message, request: Message, etags: bool):
        if etags:
            if value != ETAG:
                return value
            name = request.DESCRIPTOR.name
            if msg.DESCRIPTOR.name == "ProviderInstance":
                return self._provider_etag(msg.id)
            if name == "UpdateProviderRequest":
                return self._provider_etag(request.provider.id)
            if name == "DeleteProviderRequest":
                return self._provider_etag(request.id)
            return self.profile.etag if self.profile is not None else ""
        if value in self.ids:
            return self.ids[value]
        if value == DIRECTORY:
            return str(self.secrets_dir)
        return value

    def _bind(self, msg: Message, request: Message, etags: bool) -> None:
        for field in msg.DESCRIPTOR.fields:
            if is_map(field):
                entries = getattr(msg, field.name)
                value_field = field.message_type.fields_by_name["value"]
                for key in list(entries):
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        self._bind(entries[key], request, etags)
                    else:
                        entries[key] = self._bind_value(entries[key], msg, request, etags)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.is_repeated:
                    for item in getattr(msg, field.name):
                        self._bind(item, request, etags)
                elif msg.HasField(field.name):
                    self._bind(getattr(msg, field.name), request, etags)
            elif field.is_repeated:
                items = getattr(msg, field.name)
                items[:] = [self._bind_value(v, msg, request, etags) for v in items]
            elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_INT32):
                old = getattr(msg, field.name)
                new = self._bind_value(old, msg, request, etags)
                if new != old:
                    setattr(msg, field.name, new)

    # network safety

    def sanitize(self, msg: Message) -> bool:
        """Point every destination the server would accept and dial at loopback, on a port nothing
        listens on; True when anything was changed."""
        return self._sanitize(msg, listening_ports())

    def _sanitize(self, msg: Message, listening: set[int]) -> bool:
        changed = False
        name = msg.DESCRIPTOR.full_name
        if name in ("smtpconfig.v1.SmtpProfile", "smtpconfig.v2.SmtpProfile"):
            if not host_problems(msg.host) and not _is_loopback_literal(msg.host):
                msg.host, changed = "127.0.0.1", True
            port = msg.port if (name.startswith("smtpconfig.v2") or msg.HasField("port")) else 25
            if port in listening:
                msg.port, changed = self.closed_port, True
            if name.startswith("smtpconfig.v2") and not self._safe_endpoint(msg.token_endpoint, listening):
                msg.token_endpoint, changed = f"http://127.0.0.1:{self.closed_port}/token", True
        if name == "smtpconfig.v2.ProviderInstance":
            for key, value in msg.initialization.items():
                # The Vault type's Host (and its aliases): https:// is assumed without a scheme.
                if key in ("Host", "Url", "Address") and value.value:
                    value.value, changed = f"http://127.0.0.1:{self.closed_port}", True
        for field in msg.DESCRIPTOR.fields:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if is_map(field):
                if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    for item in getattr(msg, field.name).values():
                        changed |= self._sanitize(item, listening)
            elif field.is_repeated:
                for item in getattr(msg, field.name):
                    changed |= self._sanitize(item, listening)
            elif msg.HasField(field.name):
                changed |= self._sanitize(getattr(msg, field.name), listening)
        return changed

    def _safe_endpoint(self, url: str, listening: set[int]) -> bool:
        """An endpoint the server refuses, or one that both URL parsers place on a loopback
        literal at a port nothing listens on."""
        if token_endpoint_problems(url):
            return True
        try:
            parts, parsed = urlsplit(url), httpx.URL(url)
            default = 443 if parts.scheme.lower() == "https" else 80
            hosts, ports = (parts.hostname, parsed.host), (parts.port or default, parsed.port or default)
        except Exception:  # noqa: BLE001 - whatever a parser chokes on is rewritten
            return False
        return all(_is_loopback_literal(h) for h in hosts) and not any(p in listening for p in ports)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    data_dir = short_dir("fz")
    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "user.txt").write_text("fuzz-user\n")
    (secrets_dir / "password.txt").write_text("fuzz-password\n")
    (secrets_dir / "empty.txt").write_text("")
    (secrets_dir / "big.bin").write_bytes(b"x" * 70_000)
    (secrets_dir / "sub").mkdir()
    (secrets_dir / "link-out").symlink_to("/etc/hostname")
    os.mkfifo(secrets_dir / "pipe")
    # Bound, never listening: connecting to it is refused at once, and nothing else can take it.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    server = ServerThread(
        data_dir / "data", plugins_block=("exec",), smtp_timeout=1.0, provider_timeout=2.0,
        provider_failure_ttl=0.0, file_directories=(secrets_dir,),
    ).start()
    state = Live(server, secrets_dir, closed.getsockname()[1], errors)
    try:
        state.reset()
        yield state
    finally:
        state.channel.close()
        server.stop()
        logging.getLogger().removeHandler(errors)
        closed.close()
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the property -------------------------------------------------------------------------------


def check_status(method: MethodDescriptor, outcome: Outcome, caller: Caller, undecodable: bool) -> None:
    SEEN[method.full_name][outcome.code.name] += 1
    assert outcome.code in ALLOWED, f"{method.name}: {outcome.code.name}: {outcome.details!r}"
    # grpc's transport refuses headers over its size limit before any code of ours runs.
    too_large = outcome.code == Code.RESOURCE_EXHAUSTED and outcome.details.startswith("received metadata size")
    if undecodable and not too_large and not (caller.short_deadline and outcome.code == Code.DEADLINE_EXCEEDED):
        if ADMIN.metadata[0] in caller.metadata:
            assert (outcome.code, outcome.details) == (Code.INVALID_ARGUMENT, UNDECODABLE), outcome
        else:  # refused before the message was read, as the same caller's valid requests are
            assert outcome.code not in (Code.OK, Code.INVALID_ARGUMENT), outcome
    assert "internal error" not in outcome.details.lower(), outcome.details
    if outcome.code == Code.OK:
        GetMessageClass(method.output_type).FromString(outcome.response)  # decodes as its type
    if outcome.code == Code.DEADLINE_EXCEEDED and not caller.short_deadline:
        assert outcome.seconds < CALL_TIMEOUT - 1, f"the call hung for {outcome.seconds:.1f}s"


def follow_up(live: Live, method: MethodDescriptor, outcome: Outcome) -> None:
    """Use what an OK write stored: accepted values must not break the calls that read them."""
    if outcome.code != Code.OK:
        return
    probes: list[tuple[str, Message]] = []
    if method.full_name in PROFILE_WRITERS:
        probes += [(V2 + "ResolveSmtp", v2.ResolveSmtpRequest()), (V2 + "TestSmtp", v2.TestSmtpRequest(test_recipient=RCPT))]
    if method.full_name in (PS + "CreateProvider", PS + "UpdateProvider"):
        written = GetMessageClass(method.output_type).FromString(outcome.response).provider
        reference = providers_pb.CheckSecretRequest()
        reference.secret.provider = written.id
        reference.secret.parameters.update(REFERENCES.get(written.provider_type, {}))
        probes.append((PS + "CheckSecret", reference))
    for name, request in probes:
        probe = POOL.FindMethodByName(name)
        check_status(probe, live.call(probe, request.SerializeToString(), ADMIN), ADMIN, undecodable=False)


def settled(live: Live, last: tuple) -> tuple:
    """What the server stores once a write the caller gave up on has finished (or not)."""
    # The store runs one statement at a time: this read waits for a write still in progress.
    live.admin(AUDIT, audit_pb.ListAuditRecordsRequest(page_size=1))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = live.read()
        if now == last:
            return now
        last = now
    raise AssertionError("the stored state kept changing after the call")


def check(live: Live, method: MethodDescriptor, caller: Caller, outcome: Outcome, undecodable: bool) -> None:
    """Everything that must hold after one call; updates what the server is known to store."""
    check_status(method, outcome, caller, undecodable)
    follow_up(live, method, outcome)

    reply = live.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    profile, providers = live.read()
    if caller.short_deadline and method.full_name in PROFILE_WRITERS | PROVIDER_WRITERS:
        profile, providers = settled(live, (profile, providers))
    # A call cut short by the caller's deadline may still have been carried out.
    done = outcome.code == Code.OK or (outcome.code == Code.DEADLINE_EXCEEDED and caller.short_deadline)
    if method.full_name in PROFILE_WRITERS and done:
        live.profile = profile
    else:
        assert profile == live.profile, f"{outcome.code.name} from {method.full_name} changed the stored profile"
    if method.full_name in PROVIDER_WRITERS and done:
        live.providers = providers
    else:
        assert providers == live.providers, f"{outcome.code.name} from {method.full_name} changed provider instances"

    records, live.errors.records = live.errors.records, []
    late = caller.short_deadline and outcome.code == Code.DEADLINE_EXCEEDED
    for record in records:
        message = record.getMessage()
        if record.name == "grpc._cython.cygrpc":
            known = late and LATE_ANSWER_LOG.match(message)
            if known and known["path"] in (None, _path(method)):
                continue  # see LATE_ANSWER_LOG
        raise AssertionError(f"the server logged {record.levelname} from {record.name}: {message[:2000]}")
    live.ensure_instances()


def test_every_service_of_the_server_is_fuzzed() -> None:
    """The four services the issue names, with every method their descriptors declare."""
    services = {m.containing_service.full_name for m in METHODS}
    assert services == {
        "smtpconfig.v1.ConfigService", "smtpconfig.v2.ConfigService",
        "smtpconfig.v2.SecretProviderService", "smtpconfig.v2.AuditService",
    }
    assert len(METHODS) == sum(len(POOL.FindServiceByName(s).methods) for s in services) >= 15
    assert set(BASES) <= {m.full_name for m in METHODS}, "a mutation base names a method that is gone"


@pytest.mark.parametrize("method_name", sorted(BASES))
def test_mutation_bases_are_valid_requests(live: Live, method_name: str) -> None:
    """Mutations start from valid requests: each base gets its expected answer on the starting
    state (see `fuzzkit.Base`)."""
    method = POOL.FindMethodByName(method_name)
    for base in BASES[method_name]:
        live.reset()
        request = copy.deepcopy(base.request)
        live.bind(request)
        live.sanitize(request)
        live.errors.records.clear()
        outcome = live.call(method, request.SerializeToString(), ADMIN)
        assert outcome.code == base.expect, f"{json_format.MessageToDict(request)}: {outcome.code.name} {outcome.details}"
        check(live, method, ADMIN, outcome, undecodable=False)


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    print_blob=True,
    # Requests are drawn from large recursive strategies against a live server: slow by nature.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method_name", [m.full_name for m in METHODS])
@FUZZ_SETTINGS
@seed(SEED)
@given(data=st.data())
def test_every_rpc_answers_with_a_proper_status(live: Live, method_name: str, family: str, data) -> None:
    method = POOL.FindMethodByName(method_name)
    note(f"SMTPCONFIG_FUZZ_SEED={SEED} SMTPCONFIG_FUZZ_EXAMPLES={EXAMPLES} draws these requests again")
    if (method_name, family) not in STARTED:
        STARTED.add((method_name, family))
        live.reset()
    caller = data.draw(callers(), label="caller")
    if family == "raw":
        source = data.draw(st.one_of(messages(method.input_type), mutated(method)), label="valid start")
        live.bind(source)
        live.sanitize(source)
        kind, payload = data.draw(raw_requests(method, source.SerializeToString()), label="raw")
        try:
            decoded = request_class(method).FromString(payload)
        except DecodeError:
            # Over max_message_bytes, grpc refuses the bytes unread (RESOURCE_EXHAUSTED).
            undecodable = len(payload) <= MAX_MESSAGE_BYTES
        else:
            undecodable = False
            if live.sanitize(decoded):  # bytes that decode to a request the server would dial out with
                payload = decoded.SerializeToString()
    else:
        request = data.draw(messages(method.input_type) if family == "structured" else mutated(method), label="request")
        live.bind(request)
        live.sanitize(request)
        payload, undecodable = request.SerializeToString(), False
    live.errors.records.clear()  # a failed example leaves its records behind
    outcome = live.call(method, payload, caller)
    check(live, method, caller, outcome, undecodable)


def test_the_fuzzing_reached_the_handlers() -> None:
    """Calls got past authentication into every fuzzed method, and every writer both accepted
    and refused requests: a fuzzer that only ever hears UNAUTHENTICATED proves nothing."""
    print(f"SMTPCONFIG_FUZZ_SEED={SEED}")
    for method, codes in sorted(SEEN.items()):
        print(method, dict(codes))
    assert SEEN, "nothing was fuzzed"
    for method, codes in SEEN.items():
        reached = sum(n for code, n in codes.items() if code not in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED"))
        assert reached, f"no call reached {method}: {dict(codes)}"
    refusals = ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "ABORTED")
    for method in PROFILE_WRITERS | PROVIDER_WRITERS:
        codes = SEEN.get(method)
        if codes and sum(codes.values()) >= len(FAMILIES) * 10:
            assert codes["OK"], f"{method} never accepted a request: {dict(codes)}"
            assert any(codes[c] for c in refusals), f"{method} never refused a request: {dict(codes)}"
