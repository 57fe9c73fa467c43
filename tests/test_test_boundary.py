"""`smtp:test` never reveals more than `smtp:resolve` would (issue 9 §1), and `smtp:modify` alone
does not read the profile through UpdateSmtp's reply (§8).

The attacker holds `smtp:read` and `smtp:test`: it reads the stored profile's provider references
with GetSmtp and sends TestSmtp a candidate that points them at a relay or token endpoint of its
own. The rule under test: credentials the caller did not type go only to the stored profile's
destinations unless it also holds `smtp:resolve`; inline values it typed go anywhere.

Everything is real and on loopback: one server with token identities and a policy, a `file`
provider instance declared in its config (as an operator would) reading planted values from a
test directory, the stored relay and identity provider (aiosmtpd with STARTTLS, an HTTPS token
endpoint), and the attacker's own relay and plain-HTTP token endpoint, which must see no
connection at all when a test is refused.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from smtpconfig.api.auth import new_token, token_hash
from smtpconfig.outbound.reach import same_endpoint, same_host
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.applykit import (
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    RECIPIENT,
    USER,
    Net,
    Service,
    basic,
    bearer_check,
    describe,
    error_blobs,
    leaks,
    oauth,
    serialized,
    smtp_kit,
    token_endpoint,
    v1_profile,
    v2_profile,
)
from tests.kits.oauthkit import TokenEndpoint
from tests.kits.smtpkit import SmtpServer
from tests.kits.support import SilentListener, token_channel, wait_until

FILES_PROVIDER = 5
# What the attacker uses as its own credentials: typed by it, so free to go anywhere.
OWN_USER, OWN_PASSWORD = "attacker", "attacker-own-password"
PLANTED = (PASSWORD, CLIENT_SECRET)
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

IDENTITIES = {
    "tester": ("smtp:read", "smtp:test"),
    "resolver": ("smtp:read", "smtp:test", "smtp:resolve"),
    "modifier": ("smtp:modify",),
    "editor": ("smtp:modify", "smtp:read"),
    "runner": ("smtp:test",),
}


def ref(file: str) -> dict[str, Any]:
    """A secret object naming a planted file through the declared `file` instance."""
    return {"Provider": FILES_PROVIDER, "Parameters": {"File": file}}


class LogLines(logging.Handler):
    """Every record the server's loggers emit while this module runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class World:
    net: Net
    svc: Service  # a profile is stored here (each test stores the one it needs)
    empty: Service  # nothing is ever stored here
    relay: SmtpServer  # the stored profile's relay (STARTTLS, knows USER/PASSWORD and the IdP's tokens)
    idp: TokenEndpoint  # the stored profile's identity provider (HTTPS, knows CLIENT_ID/CLIENT_SECRET)
    tokens: dict[str, str]
    log: LogLines
    seen: list[bytes | str]  # every reply and error the attacker got, searched for planted values

    def store_basic(self) -> dict[str, Any]:
        doc = basic(self.relay, RelayPassword=ref("smtp-password"))
        self.svc.store(doc)
        return doc

    def store_oauth(self) -> dict[str, Any]:
        doc = oauth(self.relay, self.idp, ClientSecret=ref("client-secret"))
        self.svc.store(doc)
        return doc

    def channel(self, identity: str, service: Service | None = None) -> grpc.Channel:
        return token_channel((service or self.svc).server.target, self.tokens[identity])

    def test_v2(self, identity: str, doc: dict[str, Any] | None, service: Service | None = None, timeout: float = 30):
        """TestSmtp v2 as `identity`: the reply, or the RpcError."""
        request = v2.TestSmtpRequest(test_recipient=RECIPIENT)
        if doc is not None:
            request.profile.CopyFrom(v2_profile(doc))
        with self.channel(identity, service) as channel:
            try:
                reply = v2_grpc.ConfigServiceStub(channel).TestSmtp(request, timeout=timeout)
            except grpc.RpcError as error:
                self.seen.extend(error_blobs(error))
                return error
        self.seen.extend(serialized(reply))
        return reply

    def test_v1(self, identity: str, doc: dict[str, Any] | None):
        request = v1.TestSmtpRequest(test_recipient=RECIPIENT)
        if doc is not None:
            request.profile.CopyFrom(v1_profile(doc))
        with self.channel(identity) as channel:
            try:
                reply = v1_grpc.ConfigServiceStub(channel).TestSmtp(request, timeout=30)
            except grpc.RpcError as error:
                self.seen.extend(error_blobs(error))
                return error
        self.seen.extend(serialized(reply))
        return reply

    def records(self) -> list[audit_pb.AuditRecord]:
        stub = audit_grpc.AuditServiceStub(self.svc.channel)
        return list(stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_size=1000), timeout=10).records)

    def last_test_record(self, identity: str, method: str = "v2.ConfigService/TestSmtp") -> audit_pb.AuditRecord:
        found = [r for r in self.records() if r.identity == identity and r.method == method]
        assert found, f"no {method} record for {identity}"
        return found[-1]


@pytest.fixture(scope="module")
def world(net: Net, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    files = tmp_path_factory.mktemp("planted")
    (files / "smtp-password").write_text(PASSWORD + "\n")
    (files / "client-secret").write_text(CLIENT_SECRET + "\n")
    tokens = {identity: new_token() for identity in IDENTITIES}
    settings = dict(
        tokens=tuple((identity, token_hash(token)) for identity, token in tokens.items()),
        policy=tuple(IDENTITIES.items()),
        providers=({"id": FILES_PROVIDER, "name": "planted", "type": "file",
                    "initialization": {"Directory": str(files)}},),
    )
    log = LogLines()
    watched = [logging.getLogger(name) for name in ("smtpconfig", "smtpconfig_file_provider")]
    levels = [logger.level for logger in watched]
    logging.getLogger().addHandler(log)
    for logger in watched:
        logger.setLevel(logging.DEBUG)
    with token_endpoint(net) as idp, smtp_kit(net, "starttls", credentials={USER: PASSWORD},
                                              bearer_check=bearer_check(idp)) as relay:
        services: list[Service] = []
        try:
            services += [Service(net, **settings), Service(net, **settings)]
            yield World(net, *services, relay, idp, tokens, log, [])
        finally:
            for service in services:
                service.close()
            logging.getLogger().removeHandler(log)
            for logger, level in zip(watched, levels, strict=True):
                logger.setLevel(level)
            shutil.rmtree(files, ignore_errors=True)


def attacker_relay(world: World) -> SmtpServer:
    """A relay the attacker runs: it accepts the attacker's own credentials, and counts connections."""
    return smtp_kit(world.net, "starttls", credentials={OWN_USER: OWN_PASSWORD, USER: PASSWORD})


def attacker_idp() -> TokenEndpoint:
    """A token endpoint the attacker runs: plain HTTP is accepted for loopback hosts."""
    return TokenEndpoint({CLIENT_ID: CLIENT_SECRET})


def expect_denied(outcome, *names: str) -> str:
    assert isinstance(outcome, grpc.RpcError), f"the test ran:\n{describe(outcome)}"
    assert outcome.code() == PERMISSION_DENIED, f"{outcome.code()}: {outcome.details()}"
    details = outcome.details()
    for name in names:
        assert name in details, f"{name} not named in: {details}"
    assert "smtp:resolve" in details, details
    return details


def expect_ran(outcome) -> v2.TestSmtpResponse:
    assert not isinstance(outcome, grpc.RpcError), f"{outcome.code()}: {outcome.details()}"
    return outcome


def with_relay(doc: dict[str, Any], relay: SmtpServer) -> dict[str, Any]:
    return {**copy.deepcopy(doc), "Host": relay.host, "Port": relay.port}


# --- the attacks -----------------------------------------------------------------------------


def test_a_referenced_client_secret_never_reaches_the_callers_token_endpoint(world: World) -> None:
    stored = world.store_oauth()
    with attacker_idp() as evil:
        outcome = world.test_v2("tester", {**stored, "TokenEndpoint": evil.url})
        details = expect_denied(outcome, "ClientSecret", f"provider {FILES_PROVIDER}", "TokenEndpoint differs")
        assert "ClientId" not in details, "the inline client id is the caller's own"
        assert evil.requests == [] and evil.connection_errors == 0, "the endpoint was contacted"


def test_a_token_from_referenced_client_credentials_never_reaches_the_callers_relay(world: World) -> None:
    stored = world.store_oauth()
    issued = len(world.idp.issued)
    with attacker_relay(world) as evil:
        outcome = world.test_v2("tester", with_relay(stored, evil))
        expect_denied(outcome, "ClientSecret", "Port differs")
        assert evil.connections == 0, "the attacker's relay was dialled"
    assert len(world.idp.issued) == issued, "a token was fetched for a refused test"


def test_a_referenced_relay_password_never_reaches_the_callers_relay(world: World) -> None:
    stored = world.store_basic()
    with attacker_relay(world) as evil:
        outcome = world.test_v2("tester", with_relay(stored, evil))
        details = expect_denied(outcome, "RelayPassword", "Port differs")
        assert "RelayUsername" not in details, "the inline user name is the caller's own"
        assert evil.connections == 0 and evil.auth_attempts == [], "the attacker's relay was dialled"


def test_a_referenced_relay_password_never_goes_out_without_the_stored_tls(world: World) -> None:
    # Same host and port, TLS dropped: with allow_plaintext_auth the password would cross the
    # network in clear text, so the stored profile's UseSSL binds a named credential too.
    stored = world.store_basic()
    assert stored["UseSSL"] is True
    outcome = world.test_v2("tester", {**stored, "UseSSL": False})
    expect_denied(outcome, "RelayPassword", "UseSSL differs")


def test_a_referenced_credential_is_refused_when_no_profile_is_stored(world: World) -> None:
    with attacker_relay(world) as evil:
        outcome = world.test_v2("tester", basic(evil, RelayPassword=ref("smtp-password")), service=world.empty)
        details = expect_denied(outcome, "RelayPassword")
        assert "no profile is stored" in details
        assert evil.connections == 0


@pytest.mark.parametrize("auth", ["basic", "oauth"])
def test_a_caller_holding_smtp_resolve_may_send_referenced_credentials_anywhere(world: World, auth: str) -> None:
    if auth == "basic":
        stored = world.store_basic()
        with attacker_relay(world) as evil:
            reply = expect_ran(world.test_v2("resolver", with_relay(stored, evil)))
            assert reply.success, describe(reply)
            assert [a.username for a in evil.auth_attempts] == [USER]
        return
    stored = world.store_oauth()
    with attacker_idp() as evil:
        expect_ran(world.test_v2("resolver", {**stored, "TokenEndpoint": evil.url}))
        assert evil.token_requests, "the test did not run"


def test_credentials_the_caller_typed_go_to_any_relay(world: World) -> None:
    world.store_basic()
    with attacker_relay(world) as evil:
        own = basic(evil, RelayUsername={"SecretValue": OWN_USER}, RelayPassword={"SecretValue": OWN_PASSWORD})
        reply = expect_ran(world.test_v2("tester", own))
        assert reply.success, describe(reply)
        assert [(a.username, a.success) for a in evil.auth_attempts] == [(OWN_USER, True)]
        assert evil.connections == 1  # what the refused tests' "no connection" is measured with


@pytest.mark.parametrize("auth", ["basic", "oauth"])
def test_referenced_credentials_go_to_the_stored_destinations(world: World, auth: str) -> None:
    stored = world.store_basic() if auth == "basic" else world.store_oauth()
    sent = len(world.relay.messages)
    # A candidate may differ from the stored profile in everything but where credentials go.
    reply = expect_ran(world.test_v2("tester", {**stored, "SenderName": "Candidate"}))
    assert reply.success, describe(reply)
    assert world.relay.wait_for_message(count=sent + 1).message["From"].addresses[0].display_name == "Candidate"


# --- v1 ----------------------------------------------------------------------------------------


def v1_doc(relay: SmtpServer, user: str, password: str) -> dict[str, Any]:
    return {"Id": 1, "Host": relay.host, "Port": relay.port, "RelayAuthenticationType": 2,
            "RelayUsername": user, "RelayPassword": password, "SenderAccount": "relay@example.com",
            "SenderName": "Relay", "UseSSL": True}


def test_v1_typed_credentials_go_to_any_relay(world: World) -> None:
    world.store_basic()
    with attacker_relay(world) as evil:
        reply = world.test_v1("tester", v1_doc(evil, OWN_USER, OWN_PASSWORD))
        assert not isinstance(reply, grpc.RpcError), f"{reply.code()}: {reply.details()}"
        assert [(a.username, a.success) for a in evil.auth_attempts] == [(OWN_USER, True)]


def test_v1_cannot_borrow_a_stored_reference_for_its_own_relay(world: World) -> None:
    # v1 has plain strings only; its one way to name stored data is UnsupportedPAMSecret, which a
    # test refuses before the reach rule is even needed. This pins that down.
    world.svc.store(basic(world.relay, RelayUsername=ref("smtp-password")))
    with attacker_relay(world) as evil:
        error = world.test_v1("tester", v1_doc(evil, "UnsupportedPAMSecret", OWN_PASSWORD))
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "RelayUsername" in error.details()
        assert evil.connections == 0


# --- the audit trail, and no planted value anywhere ------------------------------------------


def test_every_test_record_names_the_references_and_destinations(world: World) -> None:
    stored = world.store_oauth()
    endpoint = world.idp.url.split("/")[2]

    expect_ran(world.test_v2("tester", None))  # the stored profile
    record = world.last_test_record("tester")
    assert record.outcome == "OK"
    assert list(record.fields) == ["ClientSecret"]
    assert f"ClientSecret from provider {FILES_PROVIDER}" in record.message
    assert f"relay {world.relay.host}:{world.relay.port}" in record.message
    assert f"token endpoint {endpoint}" in record.message
    assert "/token" not in record.message  # the host, not the path

    with attacker_idp() as evil:
        expect_denied(world.test_v2("tester", {**stored, "TokenEndpoint": evil.url}))
    record = world.last_test_record("tester")
    assert record.outcome == "PERMISSION_DENIED"
    assert list(record.fields) == ["ClientSecret"]
    assert f"ClientSecret from provider {FILES_PROVIDER}" in record.message
    assert f"token endpoint {evil.url.split('/')[2]}" in record.message
    assert "smtp:resolve" in record.message  # the refusal itself follows what was noted

    world.store_basic()
    reply = world.test_v1("tester", None)
    assert not isinstance(reply, grpc.RpcError), f"{reply.code()}: {reply.details()}"
    record = world.last_test_record("tester", "v1.ConfigService/TestSmtp")
    assert list(record.fields) == ["RelayPassword"]
    assert f"RelayPassword from provider {FILES_PROVIDER}" in record.message
    assert f"relay {world.relay.host}:{world.relay.port}" in record.message


def test_the_record_names_the_token_endpoint_as_the_token_client_reads_it(world: World) -> None:
    """Host and port as the token client dials them: the name as it is looked up, the port the
    scheme implies. Refused before anything is dialled, and recorded all the same."""
    stored = world.store_oauth()
    expect_denied(world.test_v2("tester", {**stored, "TokenEndpoint": "http://LocalHost/token"}))
    record = world.last_test_record("tester")
    assert record.outcome == "PERMISSION_DENIED"
    assert "token endpoint localhost:80 " in record.message, record.message


def test_an_abandoned_test_keeps_its_destinations_on_record(world: World) -> None:
    world.store_basic()
    with SilentListener() as silent:  # accepts, never greets: the test waits until the caller gives up
        doc = basic(world.relay, Port=silent.port, RelayPassword={"SecretValue": OWN_PASSWORD})
        error = world.test_v2("tester", doc, timeout=0.5)
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The record of a cancelled call is written just after the caller heard of its deadline.
    wait_until(lambda: world.last_test_record("tester").outcome == "CANCELLED", timeout=5)
    record = world.last_test_record("tester")
    assert f"relay {world.relay.host}:{silent.port} (no provider references)" in record.message
    assert "cancelled" in record.message


def test_no_planted_value_reaches_a_reply_a_record_or_a_log_line(world: World) -> None:
    # Runs after the attacks above (file order), so what they saw is searched too.
    stored = world.store_basic()
    with attacker_relay(world) as evil:
        world.test_v2("tester", with_relay(stored, evil))
        world.test_v2("resolver", with_relay(stored, evil))
    assert world.seen, "no replies were collected"
    assert leaks(world.seen, PLANTED) == [], "a reply or error holds a planted value"
    records = b"".join(r.SerializeToString() for r in world.records())
    assert leaks([records, json_format.MessageToJson(audit_pb.ListAuditRecordsResponse(records=world.records()))],
                 PLANTED) == []
    assert world.log.lines, "no log lines were captured"
    assert leaks(world.log.lines, PLANTED) == [], "a log line holds a planted value"


# --- UpdateSmtp's reply ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_update_shows_the_profile_only_to_callers_who_may_read_it(world: World, version: str) -> None:
    doc = basic(world.relay, RelayPassword=ref("smtp-password"))
    if version == "v1":
        module, stub, profile = v1, v1_grpc.ConfigServiceStub, v1_profile(v1_doc(world.relay, USER, "typed-pw"))
    else:
        module, stub, profile = v2, v2_grpc.ConfigServiceStub, v2_profile(doc)
    replies = {}
    for identity in ("modifier", "editor"):
        with world.channel(identity) as channel:
            replies[identity] = stub(channel).UpdateSmtp(module.UpdateSmtpRequest(profile=profile), timeout=10)
    blind, seeing = replies["modifier"], replies["editor"]
    assert not blind.HasField("profile"), "smtp:modify alone read the profile"
    assert blind.etag and blind.HasField("update_time")
    assert seeing.HasField("profile") and seeing.profile.host == world.relay.host
    assert seeing.etag


def test_a_v1_test_of_the_stored_profile_shows_it_only_to_callers_who_may_read_it(world: World) -> None:
    # v1's TestSmtp echoes the profile it tested, as Keyfactor's does: the stored one only to a
    # caller that may read it, or smtp:test alone would read what smtp:read guards.
    world.store_basic()
    blind = world.test_v1("runner", None)
    seeing = world.test_v1("tester", None)
    assert not isinstance(blind, grpc.RpcError), f"{blind.code()}: {blind.details()}"
    assert not blind.HasField("profile"), "smtp:test alone read the stored profile"
    assert blind.test_recipient == RECIPIENT
    assert not isinstance(seeing, grpc.RpcError) and seeing.profile.host == world.relay.host


# --- what counts as the same destination ----------------------------------------------------

SAME_HOST = [
    ("smtp.example.com", "SMTP.Example.COM", True, "DNS names ignore ASCII case"),
    ("::1", "[::1]", True, "one IPv6 address, with and without brackets"),
    ("[::1]", "[0:0:0:0:0:0:0:1]", True, "one IPv6 address, two spellings"),
    ("mail", "mail.", False, "a search list may complete `mail` but never `mail.`"),
    ("smtp.example.com", "smtp.example.com.", False, "trailing dot: not assumed equal"),
    ("127.0.0.1", "localhost", False, "a name is not the address it resolves to today"),
    ("127.0.0.1", "::ffff:127.0.0.1", False, "a mapped address is another spelling: refused"),
    ("smtp.example.com", "smtp.example.org", False, "another host"),
]


@pytest.mark.parametrize("a,b,same,reason", SAME_HOST, ids=[c[3] for c in SAME_HOST])
def test_same_host(a: str, b: str, same: bool, reason: str) -> None:
    assert same_host(a, b) is same and same_host(b, a) is same, reason


SAME_ENDPOINT = [
    ("https://login.example.com/t/token", "HTTPS://LOGIN.Example.com/t/token", True, "scheme and host ignore case"),
    ("https://login.example.com/t/token", "https://login.example.com/T/token", False, "paths are case-sensitive"),
    ("https://login.example.com/a/token", "https://login.example.com/b/token", False, "another tenant"),
    ("https://login.example.com/token", "https://login.example.com/token?x=1", False, "another query"),
    ("https://login.example.com/token", "https://login.example.com:443/token", False, "explicit port: not assumed"),
    ("https://login.example.com/token", "https://login.example.com./token", False, "trailing dot: not assumed"),
    ("https://login.example.com/token", "https://login.example.com.evil.test/token", False, "another host"),
    ("http://127.0.0.1:1/token", "http://127.0.0.1:2/token", False, "another port"),
]


@pytest.mark.parametrize("a,b,same,reason", SAME_ENDPOINT, ids=[c[3] for c in SAME_ENDPOINT])
def test_same_endpoint(a: str, b: str, same: bool, reason: str) -> None:
    assert same_endpoint(a, b) is same and same_endpoint(b, a) is same, reason
