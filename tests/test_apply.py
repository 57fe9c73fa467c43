"""Apply time through the running service (SPEC §6): TestSmtp (v1 and v2) and ResolveSmtp against a
real SMTP server (aiosmtpd: plaintext, STARTTLS, implicit TLS on port 465), a real OAuth token
endpoint over HTTPS and a real OpenBao, all on loopback, with a test CA as the only trusted root."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v2 import config_service_pb2 as v2
from tests.kits.applykit import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    FAILED,
    HEADER,
    OK,
    PASSWORD,
    RECIPIENT,
    SCOPE,
    SENDER,
    SENDER_NAME,
    STEP_NAMES,
    USER,
    Net,
    Service,
    anonymous,
    basic,
    bearer_check,
    describe,
    error_blobs,
    leaks,
    oauth,
    outcomes,
    serialized,
    serve,
    smtp_kit,
    step,
    token_endpoint,
    v1_profile,
)
from tests.kits.openbao import OpenBao
from tests.kits.smtpkit import SmtpServer, refusing_port
from tests.kits.support import violations

ANY_RESOLVE = ("OK", "SKIPPED")  # nothing to resolve for Anonymous: either reading is fair
TLS_VERSION = re.compile(r"TLS\s*v?1\.[0-3]", re.IGNORECASE)


@pytest.fixture(scope="module")
def svc(net: Net) -> Iterator[Service]:
    """The service as an operator would run it here: the test CA as the only trusted root, no
    credentials over plaintext."""
    yield from serve(net)


@pytest.fixture(scope="module")
def vault(svc: Service, openbao_server: OpenBao) -> dict[str, dict[str, Any]]:
    """Secret objects that reference OpenBao through a `vault` provider instance of `svc`."""
    openbao_server.kv_put("secret", "apply/basic", {"username": USER, "password": PASSWORD})
    openbao_server.kv_put("secret", "apply/oauth", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    provider = svc.vault(openbao_server, "apply-bao")

    def ref(secret: str, key: str) -> dict[str, Any]:
        return {"Provider": provider, "Parameters": {"Secret": secret, "Key": key}}

    return {
        "RelayUsername": ref("apply/basic", "username"),
        "RelayPassword": ref("apply/basic", "password"),
        "ClientId": ref("apply/oauth", "client_id"),
        "ClientSecret": ref("apply/oauth", "client_secret"),
        "missing": ref("apply/basic", "no-such-key"),
    }


def expect_steps(response: v2.TestSmtpResponse, expected: list[tuple[str, str | tuple[str, ...]]]) -> None:
    got = outcomes(response)
    ok = len(got) == len(expected) and all(
        name == want_name and (outcome == want if isinstance(want, str) else outcome in want)
        for (name, outcome), (want_name, want) in zip(got, expected, strict=True))
    assert ok, f"steps {got}, expected {expected}\n{describe(response)}"
    for s in response.steps:
        if s.outcome in (OK, FAILED):
            assert s.HasField("duration"), f"step {s.name} has no duration"


def success_steps(auth: str) -> list[tuple[str, str | tuple[str, ...]]]:
    return [
        ("resolve", ANY_RESOLVE if auth == "anonymous" else "OK"),
        ("token", "OK" if auth == "oauth" else "SKIPPED"),
        ("connect", "OK"),
        ("tls", "OK"),
        ("auth", "SKIPPED" if auth == "anonymous" else "OK"),
        ("send", "OK"),
    ]


def assert_delivered(smtp: SmtpServer, *, tls: bool, sender_name: str = SENDER_NAME, count: int = 1) -> None:
    message = smtp.wait_for_message(count=count)
    assert message.mail_from == SENDER
    assert message.rcpt_tos == (RECIPIENT,)
    (sender,) = message.message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (sender_name, SENDER)
    assert message.tls is tls


# --- end to end: every type, both TLS modes, inline and Vault credentials ----------------------


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("auth,source", [
    ("anonymous", "inline"),
    ("basic", "inline"),
    ("basic", "vault"),
    ("oauth", "inline"),
    ("oauth", "vault"),
])
def test_each_type_passes_end_to_end(svc: Service, net: Net, request: pytest.FixtureRequest,
                                     auth: str, source: str, mode: str) -> None:
    refs = request.getfixturevalue("vault") if source == "vault" else {}
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(token_endpoint(net)) if auth == "oauth" else None
        smtp = stack.enter_context(smtp_kit(
            net, mode, credentials={USER: PASSWORD},
            bearer_check=bearer_check(idp) if idp is not None else None))
        if auth == "anonymous":
            doc = anonymous(smtp)
        elif auth == "basic":
            doc = basic(smtp, **{k: refs[k] for k in ("RelayUsername", "RelayPassword") if k in refs})
        else:
            assert idp is not None
            doc = oauth(smtp, idp, **{k: refs[k] for k in ("ClientId", "ClientSecret") if k in refs})

        response = svc.test(doc)

        assert response.success, describe(response)
        expect_steps(response, success_steps(auth))
        assert step(response, "connect").smtp_code == 220
        assert step(response, "send").smtp_code == 250
        assert TLS_VERSION.search(step(response, "tls").message), describe(response)
        assert_delivered(smtp, tls=True)
        if auth == "anonymous":
            assert smtp.auth_attempts == []
        elif auth == "basic":
            assert step(response, "auth").smtp_code == 235
            assert [(a.mechanism, a.username, a.success, a.tls) for a in smtp.auth_attempts] == [
                ("PLAIN", USER, True, True)]
            assert smtp.messages[0].authenticated_as == USER
        else:
            assert idp is not None
            assert step(response, "auth").smtp_code == 235
            # The XOAUTH2 user is the sender mailbox; the token came from the endpoint.
            assert [(a.mechanism, a.username, a.success, a.tls) for a in smtp.auth_attempts] == [
                ("XOAUTH2", SENDER, True, True)]
            (token_request,) = idp.token_requests
            assert token_request.tls and token_request.form["grant_type"] == "client_credentials"
            assert token_request.auth_method == "client_secret_post"
            assert token_request.client_id == CLIENT_ID
            assert token_request.scope == SCOPE and token_request.audience == AUDIENCE
            assert token_request.header(HEADER[0]) == HEADER[1]
        planted = [PASSWORD, CLIENT_SECRET] + ([t.access_token for t in idp.issued] if idp else [])
        assert leaks(serialized(response), planted) == []


def test_basic_falls_back_to_login_when_plain_is_not_offered(svc: Service, net: Net) -> None:
    with smtp_kit(net, "starttls", mechanisms=("LOGIN",), credentials={USER: PASSWORD}) as smtp:
        response = svc.test(basic(smtp))
        assert response.success, describe(response)
        assert [(a.mechanism, a.username, a.success) for a in smtp.auth_attempts] == [("LOGIN", USER, True)]
        assert_delivered(smtp, tls=True)


def test_non_ascii_sender_name_is_rfc2047_encoded(svc: Service, net: Net) -> None:
    name = "Équipe Relais ✉ 東京"
    with smtp_kit(net, "starttls") as smtp:
        response = svc.test(anonymous(smtp, SenderName=name))
        assert response.success, describe(response)
        assert_delivered(smtp, tls=True, sender_name=name)
        raw_from = next(line for line in smtp.messages[0].raw.split(b"\r\n") if line.lower().startswith(b"from:"))
        assert raw_from.isascii() and b"=?utf-8?" in raw_from.lower(), raw_from


def test_plaintext_anonymous_never_attempts_tls(svc: Service, net: Net) -> None:
    with smtp_kit(net, "plain") as smtp:
        response = svc.test(anonymous(smtp))
        assert response.success, describe(response)
        expect_steps(response, [("resolve", ANY_RESOLVE), ("token", "SKIPPED"), ("connect", "OK"),
                                ("tls", "SKIPPED"), ("auth", "SKIPPED"), ("send", "OK")])
        assert_delivered(smtp, tls=False)


def test_plaintext_auth_when_the_operator_allows_it(net: Net) -> None:
    with contextlib.ExitStack() as stack:
        lenient = stack.enter_context(contextlib.contextmanager(serve)(net, allow_plaintext_auth=True))
        smtp = stack.enter_context(smtp_kit(net, "plain", auth_require_tls=False, credentials={USER: PASSWORD}))
        response = lenient.test(basic(smtp))
        assert response.success, describe(response)
        expect_steps(response, [("resolve", "OK"), ("token", "SKIPPED"), ("connect", "OK"),
                                ("tls", "SKIPPED"), ("auth", "OK"), ("send", "OK")])
        assert [(a.username, a.success, a.tls) for a in smtp.auth_attempts] == [(USER, True, False)]
        assert_delivered(smtp, tls=False)


# --- failures: the right step, the right hint, nothing after it, no secret ---------------------


@dataclass(frozen=True)
class Failure:
    id: str
    # Builds the world inside the stack; returns the profile to test and the SMTP kit (if any).
    setup: Callable[[Net, contextlib.ExitStack], tuple[dict[str, Any], SmtpServer | None]]
    failed: str
    where: str  # "hint" or "message"
    words: str
    smtp_code: int | None = None
    # For an SMTP failure, whether the kit saw any AUTH command at all.
    no_auth_attempt: bool = False


def _kit_basic(mode: str, certs: str | None = None, **kit: Any):
    """A kit in `mode` (with the `net.pki` certificate set named by `certs`) and a Basic profile."""
    def setup(net: Net, stack: contextlib.ExitStack):
        if certs is not None:
            kit["certs"] = getattr(net.pki, certs)
        smtp = stack.enter_context(smtp_kit(net, mode, **kit))
        return basic(smtp), smtp
    return setup


@dataclass
class _Addr:  # stands in for a kit that is not there
    host: str
    port: int
    mode: str = "starttls"


def _refusing(net: Net, stack: contextlib.ExitStack):
    port = stack.enter_context(refusing_port())
    return {**basic(_Addr("127.0.0.1", port)), "UseSSL": True}, None


def _idp_then(change: Callable[[Any], None]):
    def setup(net: Net, stack: contextlib.ExitStack):
        idp = stack.enter_context(token_endpoint(net))
        smtp = stack.enter_context(smtp_kit(net, "starttls", bearer_check=bearer_check(idp)))
        doc = oauth(smtp, idp)
        change(idp)
        return doc, smtp
    return setup


MS_BASIC_DISABLED = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
NOT_PERMITTED = "535 5.7.3 Authentication unsuccessful"

FAILURES = [
    Failure("wrong-password", _kit_basic("starttls", credentials={USER: "another-password"}),
            "auth", "hint", "rejected", smtp_code=535),
    Failure("basic-auth-disabled-5.7.139",
            _kit_basic("starttls", credentials={}, auth_failure_replies={"PLAIN": MS_BASIC_DISABLED,
                                                                         "LOGIN": MS_BASIC_DISABLED}),
            "auth", "hint", "basic authentication is disabled", smtp_code=535),
    Failure("not-permitted-5.7.3",
            _kit_basic("implicit", credentials={}, auth_failure_replies={"PLAIN": NOT_PERMITTED,
                                                                         "LOGIN": NOT_PERMITTED}),
            "auth", "hint", "not permitted", smtp_code=535),
    Failure("smtp-server-down", _refusing, "connect", "hint", "reachable"),
    Failure("starttls-not-offered", _kit_basic("starttls", offer_starttls=False, credentials={USER: PASSWORD}),
            "tls", "hint", "STARTTLS", no_auth_attempt=True),
    Failure("certificate-for-another-host-starttls", _kit_basic("starttls", certs="other_host"),
            "tls", "hint", "host name", no_auth_attempt=True),
    Failure("certificate-for-another-host-implicit", _kit_basic("implicit", certs="other_host"),
            "tls", "hint", "host name", no_auth_attempt=True),
    Failure("self-signed-starttls", _kit_basic("starttls", certs="self_signed"),
            "tls", "hint", "CA bundle", no_auth_attempt=True),
    Failure("self-signed-implicit", _kit_basic("implicit", certs="self_signed"),
            "tls", "hint", "CA bundle", no_auth_attempt=True),
    Failure("auth-over-plaintext", _kit_basic("plain", auth_require_tls=False, credentials={USER: PASSWORD}),
            "auth", "hint", "TLS", no_auth_attempt=True),
    Failure("revoked-client-secret", _idp_then(lambda idp: idp.revoke(CLIENT_ID)),
            "token", "message", "invalid_client", no_auth_attempt=True),
    Failure("token-endpoint-down", _idp_then(lambda idp: idp.stop()),
            "token", "message", "cannot be reached", no_auth_attempt=True),
    Failure("idp-error-invalid-scope", _idp_then(lambda idp: idp.force_error("invalid_scope", "no such scope")),
            "token", "message", "invalid_scope", no_auth_attempt=True),
]

def _steps_until(failed: str, doc: dict[str, Any]) -> list[tuple[str, str | tuple[str, ...]]]:
    auth_type = doc["RelayAuthenticationType"]
    applies = {
        "resolve": True,
        "token": auth_type == 3,
        "connect": True,
        "tls": bool(doc.get("UseSSL")),
        "auth": auth_type != 0,
        "send": True,
    }
    expected: list[tuple[str, str | tuple[str, ...]]] = []
    for name in STEP_NAMES:
        if name == failed:
            expected.append((name, "FAILED"))
            return expected
        expected.append((name, "OK" if applies[name] else "SKIPPED"))
    raise AssertionError(failed)


@pytest.mark.parametrize("case", FAILURES, ids=[c.id for c in FAILURES])
def test_failure_is_reported_at_its_step_with_a_hint(svc: Service, net: Net, case: Failure) -> None:
    with contextlib.ExitStack() as stack:
        doc, smtp = case.setup(net, stack)
        before = svc.stored()
        started = time.monotonic()
        response = svc.test(doc)
        elapsed = time.monotonic() - started

        assert not response.success, describe(response)
        expect_steps(response, _steps_until(case.failed, doc))
        failed = step(response, case.failed)
        text = getattr(failed, case.where)
        assert case.words.lower() in text.lower(), describe(response)
        if case.smtp_code is not None:
            assert failed.smtp_code == case.smtp_code, describe(response)
        if smtp is not None:
            assert smtp.messages == []
            if case.no_auth_attempt:
                assert smtp.auth_attempts == [], smtp.auth_attempts
        assert elapsed < 5.0  # a known failure is reported promptly, not at a timeout
        assert leaks(serialized(response), [PASSWORD, CLIENT_SECRET]) == []
        assert svc.stored() == before


def test_vault_reference_to_a_missing_key_fails_at_resolve(svc: Service, net: Net, vault) -> None:
    with smtp_kit(net, "starttls", credentials={USER: PASSWORD}) as smtp:
        response = svc.test(basic(smtp, RelayUsername=vault["RelayUsername"], RelayPassword=vault["missing"]))
        assert not response.success
        expect_steps(response, [("resolve", "FAILED")])
        assert "Key=" in step(response, "resolve").message, describe(response)
        assert smtp.messages == [] and smtp.auth_attempts == []
        assert leaks(serialized(response), [PASSWORD]) == []


# --- XOAUTH2: a refused token is replaced once ------------------------------------------------


@pytest.mark.parametrize("gmail_challenge", [False, True], ids=["535", "334-json-then-535"])
def test_xoauth2_535_fetches_one_fresh_token_and_retries(svc: Service, net: Net, gmail_challenge: bool) -> None:
    with token_endpoint(net, expires_in=3600) as idp, smtp_kit(
            net, "starttls", bearer_check=bearer_check(idp), xoauth2_error_challenge=gmail_challenge) as smtp:
        doc = oauth(smtp, idp)
        first = svc.test(doc)
        assert first.success, describe(first)
        assert len(idp.token_requests) == 1

        idp.expire_all()  # the service still holds the first token, valid for an hour by its clock
        second = svc.test(doc)

        assert second.success, describe(second)
        assert len(idp.token_requests) == 2
        assert [(a.mechanism, a.success) for a in smtp.auth_attempts] == [
            ("XOAUTH2", True), ("XOAUTH2", False), ("XOAUTH2", True)]
        assert_delivered(smtp, tls=True, count=2)
        assert leaks(serialized(first) + serialized(second),
                     [CLIENT_SECRET] + [t.access_token for t in idp.issued]) == []


def test_xoauth2_retries_only_once(svc: Service, net: Net) -> None:
    with token_endpoint(net) as idp, smtp_kit(net, "starttls", bearer_check=lambda u, t: False) as smtp:
        response = svc.test(oauth(smtp, idp))
        assert not response.success
        expect_steps(response, _steps_until("auth", oauth(smtp, idp)))
        assert step(response, "auth").smtp_code == 535
        assert len(idp.token_requests) == 2  # the first token and one fresh one, no more
        assert [a.mechanism for a in smtp.auth_attempts] == ["XOAUTH2", "XOAUTH2"]
        assert smtp.messages == []


# --- the stored profile, and TestSmtp never storing -------------------------------------------


def test_without_a_profile_the_stored_one_is_tested(svc: Service, net: Net) -> None:
    with smtp_kit(net, "starttls", credentials={USER: PASSWORD}) as smtp:
        stored = svc.store(basic(smtp))
        response = svc.test(None)
        assert response.success, describe(response)
        assert_delivered(smtp, tls=True)
        after = svc.stored()
        assert after.etag == stored.etag and after.profile == stored.profile


def test_testing_a_profile_never_stores_it(svc: Service, net: Net) -> None:
    with smtp_kit(net, "implicit") as other, smtp_kit(net, "starttls", credentials={USER: PASSWORD}) as smtp:
        stored = svc.store(anonymous(other))
        assert svc.test(basic(smtp)).success
        assert not svc.test(basic(smtp, RelayPassword={"SecretValue": "wrong"})).success
        after = svc.stored()
        assert after.etag == stored.etag and after.profile == stored.profile
        assert other.messages == []


@pytest.mark.parametrize("recipient", ["", "not-an-address", "ops@example.org\r\nBcc: x@example.org"],
                         ids=["empty", "no-at", "header-injection"])
def test_invalid_recipient_is_invalid_argument(svc: Service, net: Net, recipient: str) -> None:
    with smtp_kit(net, "starttls") as smtp:
        before = svc.stored()
        with pytest.raises(grpc.RpcError) as error:
            svc.test(anonymous(smtp), recipient=recipient)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any("TestRecipient" in f for f, _ in violations(error.value)), violations(error.value)
        with pytest.raises(grpc.RpcError) as error1:
            svc.v1.TestSmtp(v1.TestSmtpRequest(profile=v1_profile(_v1_doc(smtp, auth=0)), test_recipient=recipient))
        assert error1.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any("TestRecipient" in f for f, _ in violations(error1.value))
        assert smtp.messages == []
        assert svc.stored() == before


@pytest.mark.parametrize("change,field", [
    ({"Host": "smtp example.com"}, "Host"),
    ({"Port": 70000}, "Port"),
    ({"SenderAccount": "nobody"}, "SenderAccount"),
    ({"SenderName": "Evil\r\nBcc: x@example.org"}, "SenderName"),
    ({"RelayPassword": None}, "RelayPassword"),
])
def test_invalid_profile_is_invalid_argument_naming_the_field(svc: Service, net: Net, change, field) -> None:
    with smtp_kit(net, "starttls", credentials={USER: PASSWORD}) as smtp:
        doc = {k: v for k, v in {**basic(smtp), **change}.items() if v is not None}
        with pytest.raises(grpc.RpcError) as error:
            svc.test(doc)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any(field in f for f, _ in violations(error.value)), violations(error.value)
        assert smtp.messages == [] and smtp.auth_attempts == []
        assert leaks(error_blobs(error.value), [PASSWORD]) == []


# --- v1 TestSmtp -------------------------------------------------------------------------------


def _v1_doc(smtp, *, auth: int = 2, password: str = PASSWORD) -> dict[str, Any]:
    doc = {"Id": 1, "Host": smtp.host, "Port": smtp.port, "RelayAuthenticationType": auth,
           "SenderAccount": SENDER, "SenderName": SENDER_NAME, "UseSSL": smtp.mode != "plain"}
    if auth == 2:
        doc.update(RelayUsername=USER, RelayPassword=password)
    return doc


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_v1_success_echoes_the_profile_without_the_password(svc: Service, net: Net, mode: str) -> None:
    with smtp_kit(net, mode, credentials={USER: PASSWORD}) as smtp:
        response = svc.v1.TestSmtp(v1.TestSmtpRequest(profile=v1_profile(_v1_doc(smtp)), test_recipient=RECIPIENT))
        assert response.test_recipient == RECIPIENT
        echoed = response.profile
        assert (echoed.host, echoed.port, echoed.relay_authentication_type, echoed.relay_username) == (
            smtp.host, smtp.port, 2, USER)
        assert (echoed.sender_account, echoed.sender_name, echoed.use_ssl) == (SENDER, SENDER_NAME, True)
        assert echoed.relay_password == ""
        assert leaks(serialized(response), [PASSWORD]) == []
        assert_delivered(smtp, tls=True)
        assert [(a.mechanism, a.username, a.success) for a in smtp.auth_attempts] == [("PLAIN", USER, True)]


@pytest.mark.parametrize("case,code,step_name", [
    ("wrong-password", grpc.StatusCode.FAILED_PRECONDITION, "auth"),
    ("self-signed", grpc.StatusCode.FAILED_PRECONDITION, "tls"),
    ("server-down", grpc.StatusCode.UNAVAILABLE, "connect"),
])
def test_v1_failure_is_a_status_naming_the_step(svc: Service, net: Net, case: str, code, step_name: str) -> None:
    with contextlib.ExitStack() as stack:
        if case == "server-down":
            target: Any = _Addr("127.0.0.1", stack.enter_context(refusing_port()))
        else:
            certs = net.pki.self_signed if case == "self-signed" else net.pki.localhost
            target = stack.enter_context(smtp_kit(net, "starttls", certs=certs, credentials={USER: "other"}))
        with pytest.raises(grpc.RpcError) as error:
            svc.v1.TestSmtp(v1.TestSmtpRequest(profile=v1_profile(_v1_doc(target)), test_recipient=RECIPIENT))
        assert error.value.code() == code, error.value.details()
        assert step_name in error.value.details().lower(), error.value.details()
        assert leaks(error_blobs(error.value), [PASSWORD]) == []


def test_v1_refuses_oauth(svc: Service, net: Net) -> None:
    with smtp_kit(net, "starttls") as smtp:
        with pytest.raises(grpc.RpcError) as error:
            svc.v1.TestSmtp(v1.TestSmtpRequest(profile=v1_profile(_v1_doc(smtp, auth=3)), test_recipient=RECIPIENT))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "v2" in error.value.details().lower() or any("v2" in d.lower() for _, d in violations(error.value))


# --- ResolveSmtp -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["inline", "vault"])
def test_resolve_basic_returns_username_and_password(svc: Service, net: Net, request, source: str) -> None:
    refs = request.getfixturevalue("vault") if source == "vault" else {}
    with smtp_kit(net, "starttls") as smtp:
        stored = svc.store(basic(smtp, **{k: refs[k] for k in ("RelayUsername", "RelayPassword") if k in refs}))
    answer = svc.resolve()
    assert (answer.credentials.username, answer.credentials.password) == (USER, PASSWORD)
    assert answer.credentials.access_token == ""
    assert answer.etag == stored.etag
    assert answer.cache_for.ToTimedelta().total_seconds() > 0
    assert answer.profile.relay_password.secret_value == ""
    assert answer.profile.host == smtp.host and answer.profile.port == smtp.port


@pytest.mark.parametrize("source", ["inline", "vault"])
def test_resolve_oauth_returns_a_token_never_the_client_secret(svc: Service, net: Net, request, source: str) -> None:
    refs = request.getfixturevalue("vault") if source == "vault" else {}
    with token_endpoint(net, expires_in=1800) as idp:
        with smtp_kit(net, "starttls") as smtp:
            stored = svc.store(oauth(smtp, idp, **{k: refs[k] for k in ("ClientId", "ClientSecret") if k in refs}))
        answer = svc.resolve()
        credentials = answer.credentials
        assert idp.token_valid(credentials.access_token, scope=SCOPE, audience=AUDIENCE)
        assert credentials.token_type == "Bearer"
        assert (credentials.username, credentials.password) == ("", "")
        expires = credentials.token_expire_time.ToDatetime(tzinfo=UTC)
        now = datetime.now(UTC)
        assert now < expires <= now + timedelta(seconds=1800 + 5)
        cache_for = answer.cache_for.ToTimedelta().total_seconds()
        assert 0 < cache_for <= (expires - now).total_seconds() + 1
        assert answer.etag == stored.etag
        assert leaks(serialized(answer), [CLIENT_SECRET]) == []
        (token_request,) = idp.token_requests
        assert token_request.scope == SCOPE and token_request.audience == AUDIENCE
        assert token_request.header(HEADER[0]) == HEADER[1]


def test_resolve_anonymous_has_no_credentials(svc: Service, net: Net) -> None:
    with smtp_kit(net, "starttls") as smtp:
        stored = svc.store(anonymous(smtp))
    answer = svc.resolve()
    assert answer.credentials == v2.ResolvedCredentials()
    assert answer.etag == stored.etag
    assert answer.cache_for.ToTimedelta().total_seconds() > 0


# --- secrets stay inside: responses, errors, logs --------------------------------------------


def test_planted_secrets_appear_in_no_response_error_or_log(net: Net, caplog: pytest.LogCaptureFixture,
                                                            capfd: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str | bytes] = []
    with contextlib.ExitStack() as stack:
        service = stack.enter_context(contextlib.contextmanager(serve)(net, log_level="debug"))
        idp = stack.enter_context(token_endpoint(net))
        good = stack.enter_context(smtp_kit(net, "starttls", credentials={USER: PASSWORD},
                                            bearer_check=bearer_check(idp)))
        bad = stack.enter_context(smtp_kit(net, "implicit", credentials={USER: "other"},
                                           bearer_check=lambda u, t: False))
        plain = stack.enter_context(smtp_kit(net, "plain", auth_require_tls=False, credentials={USER: PASSWORD}))

        for doc in (basic(good), basic(bad), basic(plain), oauth(good, idp), oauth(bad, idp)):
            seen += serialized(service.test(doc))
        idp.expire_all()
        seen += serialized(service.test(oauth(good, idp)))  # the 535-and-retry path
        idp.revoke(CLIENT_ID)
        seen += serialized(service.test(oauth(good, idp, Scope="other")))  # a fresh fetch, refused
        idp.restore(CLIENT_ID)
        for v1_target in (good, bad):
            try:
                seen += serialized(service.v1.TestSmtp(v1.TestSmtpRequest(
                    profile=v1_profile(_v1_doc(v1_target)), test_recipient=RECIPIENT)))
            except grpc.RpcError as error:
                seen += error_blobs(error)
        with pytest.raises(grpc.RpcError) as invalid:
            service.test(basic(good, Host="bad host"))
        seen += error_blobs(invalid.value)
        service.store(oauth(good, idp))
        resolved = service.resolve()
        seen += serialized(resolved.profile)
        seen.append(str(resolved.credentials.token_type))
        assert leaks(serialized(resolved), [CLIENT_SECRET]) == []
        service.store(basic(good))
        seen += serialized(service.resolve().profile)
        seen += serialized(service.v2.GetSmtp(v2.GetSmtpRequest()))
        tokens = [t.access_token for t in idp.issued]
        assert len(tokens) >= 3

    planted = [PASSWORD, CLIENT_SECRET, *tokens]
    assert leaks(seen, planted) == []
    service_records = [r for r in caplog.records if not r.name.startswith(("mail.log", "tests."))]
    assert service_records, "the server logged nothing at DEBUG: is caplog seeing it?"
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    log_text = [formatter.format(r) for r in service_records]
    assert leaks(log_text, planted) == []
    out, err = capfd.readouterr()
    assert leaks([out, err], planted) == []
