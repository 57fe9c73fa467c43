"""Issue 9 §4: nothing a third party sends back becomes a leak or a forged log line.

A relay, an identity provider, Vault or a command may echo what the service sent it: the AUTH
payload in base64, the client secret as the form body carried it, the instance's token. Each
test here runs the real service against a real component that echoes (the SMTP kit with
`auth_echo`, the OAuth kit with `echo_credentials`, a loopback Vault stand-in, a real command),
calls as an identity holding only the permission the call needs, and then searches the reply, the
server's log lines (text and JSON, as `smtpconfig.ops.logs.configure` writes them) and the audit trail
for the planted values in every encoding, for line breaks and for length.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import grpc
import pytest

from smtpconfig.api.auth import token_hash
from smtpconfig.ops import logs
from smtpconfig.ops.audit import MAX_MESSAGE
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits import oauthkit, smtpkit
from tests.kits.applykit import (
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    RECIPIENT,
    SENDER,
    USER,
    Net,
    Service,
    basic,
    oauth,
    smtp_kit,
    step,
    token_endpoint,
)
from tests.kits.support import token_channel

TESTER_TOKEN = "PLANTED-tester-bearer-3e9d01"
RESOLVER_TOKEN = "PLANTED-resolver-bearer-7c42b8"
CHECKER_TOKEN = "PLANTED-checker-bearer-0b6e55"
CALLERS = dict(
    tokens=(("tester", token_hash(TESTER_TOKEN)), ("resolver", token_hash(RESOLVER_TOKEN)),
            ("checker", token_hash(CHECKER_TOKEN))),
    policy=(("tester", ("smtp:test",)), ("resolver", ("smtp:resolve",)), ("checker", ("providers:read",))),
)
VAULT_TOKEN = "PLANTED-vault-token-c81f7a"
EXEC_TOKEN = "PLANTED-exec-token-4d2e90"
PROVIDER_FORGED_LINE = "2026-01-01T00:00:00.000Z INFO smtpconfig.api.calls FORGED by the backend"
FORGED = (smtpkit.ECHO_FORGED_LINE, oauthkit.ECHO_FORGED_LINE, PROVIDER_FORGED_LINE)
# Longest message allowed: a sentence of ours around one capped third-party text; an audit
# record's message (a test's destinations, then its failure) is cut at MAX_MESSAGE with a mark.
LONGEST = MAX_MESSAGE + len("…[cut, 100000 chars]")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+)")


# --- what counts as a leak -------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def encodings(value: str) -> set[str]:
    """`value` in every form an echo could show it: any case, base64, URL-encoded."""
    forms = {value, b64(value), quote(value, safe=""), quote_plus(value)}
    return {f for form in forms for f in (form, form.upper(), form.lower())}


def leaked(texts: Iterable[str], forms: Iterable[str]) -> list[str]:
    """The forms found in any text (shortened, so the report does not print them whole)."""
    return sorted({f[:6] + "..." for f in forms for t in texts if f in t})


def not_one_line(texts: Iterable[str]) -> list[str]:
    """Texts holding a character that is not printable (CR, LF, NUL, bidi controls, ...)."""
    return [t[:80] for t in texts if not t.isprintable()]


def too_long(texts: Iterable[str]) -> list[int]:
    return [len(t) for t in texts if len(t) > LONGEST]


# --- the server's log lines, as configured by an operator -----------------------------------


@contextlib.contextmanager
def server_log(fmt: str) -> Iterator[io.StringIO]:
    """The root handler `smtpconfig.ops.logs.configure` installs, writing to a buffer at debug level."""
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    logs.configure("debug", fmt, stream=out)
    try:
        yield out
    finally:
        if logs._handler is not None:
            root.removeHandler(logs._handler)
            logs._handler = None
        root.setLevel(level)


def ours(out: io.StringIO, fmt: str) -> list[str]:
    """The service's log lines, without those of the in-process test components (aiosmtpd logs
    the relay's side of the exchange as `mail.log`). A line that does not start a record of its
    own continues the one before it: it is the service's if that record was."""
    lines, keep = [], True
    for line in out.getvalue().splitlines():
        if fmt == "json":
            try:
                keep = not json.loads(line)["logger"].startswith("mail.")
            except ValueError:
                pass  # not JSON: a line break inside a record (it stays, and fails the test)
        else:
            stamp = STAMP.match(line)
            if stamp is not None and not line.startswith(FORGED):
                keep = not stamp.group(2).startswith("mail.")
        if keep:
            lines.append(line)
    return lines


def check_log(out: io.StringIO, fmt: str, forms: set[str], marker: str) -> None:
    lines = ours(out, fmt)
    assert any(marker in line for line in lines), f"the third party's text never reached the log ({marker!r})"
    assert leaked(lines, forms) == []
    assert [line for line in lines if line.startswith(FORGED)] == [], "a forged log line"
    if fmt == "json":
        messages = [json.loads(line)["message"] for line in lines]
        assert not_one_line(messages) == []
    else:
        # A record over several lines (another library's traceback) continues indented; no
        # record of the service spans lines.
        logger = ""
        for line in lines:
            stamp = STAMP.match(line)
            if stamp is not None:
                logger = stamp.group(2)
                continue
            assert line.startswith("  "), f"a line that starts no record and continues none: {line[:80]!r}"
            assert not logger.startswith("smtpconfig"), f"a record of the service over two lines: {line[:80]!r}"


# --- the audit trail -------------------------------------------------------------------------


def audit_messages(service: Service, method_suffix: str) -> list[str]:
    stub = audit_grpc.AuditServiceStub(service.channel)
    records = stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_size=1000), timeout=10).records
    return [r.message for r in records if r.method.endswith(method_suffix)]


def check_texts(texts: list[str], forms: set[str]) -> None:
    assert leaked(texts, forms) == []
    assert not_one_line(texts) == []
    assert too_long(texts) == []


# --- the service, with a caller that may only test -------------------------------------------


@pytest.fixture
def service(net: Net) -> Iterator[Service]:
    svc = Service(net, **CALLERS)
    try:
        yield svc
    finally:
        svc.close()


def as_tester(service: Service) -> grpc.Channel:
    return token_channel(service.server.target, TESTER_TOKEN)


def as_resolver(service: Service) -> grpc.Channel:
    return token_channel(service.server.target, RESOLVER_TOKEN)


def as_checker(service: Service) -> grpc.Channel:
    return token_channel(service.server.target, CHECKER_TOKEN)


def check_secret(service: Service, provider: int, **parameters: str) -> grpc.RpcError:
    """CheckSecret of a reference, as a caller holding only providers:read; it must fail."""
    request = pb.CheckSecretRequest(secret=secret_pb2.SecretObject(provider=provider, parameters=parameters))
    with as_checker(service) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.SecretProviderServiceStub(channel).CheckSecret(request, timeout=30)
    return refused.value


def stored_profile_tested(service: Service, channel: grpc.Channel) -> tuple[v2.TestSmtpResponse, grpc.RpcError]:
    """TestSmtp of the stored profile over v2 (steps) and v1 (the failed step as the error)."""
    answer = v2_grpc.ConfigServiceStub(channel).TestSmtp(v2.TestSmtpRequest(test_recipient=RECIPIENT), timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        v1_grpc.ConfigServiceStub(channel).TestSmtp(v1.TestSmtpRequest(test_recipient=RECIPIENT), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    return answer, refused.value


def step_texts(answer: v2.TestSmtpResponse) -> list[str]:
    return [text for s in answer.steps for text in (s.message, s.hint)]


# --- SMTP replies ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_relay_echoing_the_auth_payload_shows_no_credential_and_forges_no_line(
    service: Service, net: Net, mechanism: str, fmt: str
) -> None:
    with smtp_kit(net, "starttls", mechanisms=[mechanism], credentials={USER: "other"}, auth_echo=True) as smtp:
        service.store(basic(smtp))
        with server_log(fmt) as out, as_tester(service) as channel:
            answer, refused = stored_profile_tested(service, channel)
        assert [a.mechanism for a in smtp.auth_attempts] == [mechanism, mechanism]

    forms = encodings(USER) | encodings(PASSWORD) | encodings(f"\0{USER}\0{PASSWORD}")
    auth = step(answer, "auth")
    assert auth.outcome == v2.STEP_OUTCOME_FAILED and auth.smtp_code == 535
    check_texts(step_texts(answer) + [refused.details()], forms)
    assert "FORGED by the relay" in auth.message, "the reply is shown, cleaned"
    check_texts(audit_messages(service, "ConfigService/TestSmtp"), forms)
    check_log(out, fmt, forms, "FORGED by the relay")


def test_a_relay_echoing_the_xoauth2_payload_shows_no_token(service: Service, net: Net) -> None:
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(token_endpoint(net))
        smtp = stack.enter_context(smtp_kit(net, "starttls", mechanisms=["XOAUTH2"], bearer_check=lambda u, t: False,
                                            auth_echo=True))
        service.store(oauth(smtp, idp))
        with server_log("text") as out, as_tester(service) as channel:
            answer, refused = stored_profile_tested(service, channel)
        # Each test is refused a token, fetches a fresh one and is refused again; the second
        # test starts with the first one's fresh token, still cached.
        assert [a.mechanism for a in smtp.auth_attempts] == ["XOAUTH2"] * 4
        tokens = [t.access_token for t in idp.issued]
    assert len(tokens) == 3
    forms = encodings(CLIENT_SECRET)
    for token in tokens:
        forms |= encodings(token) | encodings(f"user={SENDER}\x01auth=Bearer {token}\x01\x01")
    auth = step(answer, "auth")
    assert auth.outcome == v2.STEP_OUTCOME_FAILED
    check_texts(step_texts(answer) + [refused.details()], forms)
    assert "FORGED by the relay" in auth.message, "the reply is shown, cleaned"
    check_texts(audit_messages(service, "ConfigService/TestSmtp"), forms)
    check_log(out, "text", forms, "FORGED by the relay")


# --- the identity provider's error and error_description ------------------------------------


def echoing_endpoint(net: Net, how: str, stack: contextlib.ExitStack) -> oauthkit.TokenEndpoint:
    """An endpoint that refuses the client and says back what it was sent."""
    if how == "echo":
        idp = stack.enter_context(token_endpoint(net, echo_credentials=True))
        idp.revoke(CLIENT_ID)
        return idp
    idp = stack.enter_context(token_endpoint(net))
    # Both fields planted, the error code too: an IdP may put anything in either.
    basic_auth = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    idp.force_error(f"invalid_client\n{quote_plus(CLIENT_SECRET)}",
                    f"secret {CLIENT_SECRET.upper()}\r\n{oauthkit.ECHO_FORGED_LINE}\nBasic {basic_auth}" + " x" * 2000)
    return idp


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("how", ["echo", "planted"])
def test_an_identity_provider_echoing_the_client_secret_shows_none_of_it(
    service: Service, net: Net, how: str, fmt: str
) -> None:
    with contextlib.ExitStack() as stack:
        idp = echoing_endpoint(net, how, stack)
        smtp = stack.enter_context(smtp_kit(net, "starttls"))
        service.store(oauth(smtp, idp))
        with server_log(fmt) as out:
            with as_tester(service) as channel:
                answer, refused = stored_profile_tested(service, channel)
            with as_resolver(service) as channel, pytest.raises(grpc.RpcError) as resolved:
                v2_grpc.ConfigServiceStub(channel).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=30)
        assert idp.token_requests, "the endpoint was asked"
        assert smtp.auth_attempts == [], "the relay is never reached without a token"

    forms = encodings(CLIENT_SECRET) | encodings(f"{CLIENT_ID}:{CLIENT_SECRET}")
    forms |= encodings(f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}")
    token = step(answer, "token")
    assert token.outcome == v2.STEP_OUTCOME_FAILED
    assert resolved.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    check_texts([*step_texts(answer), refused.details(), resolved.value.details()], forms)
    assert "FORGED by the identity provider" in token.message, "the IdP's words are shown, cleaned"
    check_texts(audit_messages(service, "ConfigService/TestSmtp") + audit_messages(service, "ResolveSmtp"), forms)
    check_log(out, fmt, forms, "FORGED by the identity provider")


def test_a_token_type_echoing_the_client_secret_never_reaches_the_resolver(service: Service, net: Net) -> None:
    access_token = "PLANTED-access-token-from-a-careless-idp-41aa"
    token_type = f"Bearer {CLIENT_SECRET}\r\n{quote_plus(CLIENT_SECRET).lower()} {b64(CLIENT_ID + ':' + CLIENT_SECRET)}"
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(token_endpoint(net))
        smtp = stack.enter_context(smtp_kit(net, "starttls"))
        answer = json.dumps({"access_token": access_token, "token_type": token_type, "expires_in": 600})
        idp.force_http_status(200, answer, content_type="application/json")
        service.store(oauth(smtp, idp))
        with as_resolver(service) as channel:
            resolved = v2_grpc.ConfigServiceStub(channel).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=30)
    assert resolved.credentials.access_token == access_token  # what smtp:resolve is for
    assert resolved.credentials.token_type.startswith("Bearer ")
    forms = encodings(CLIENT_SECRET) | encodings(f"{CLIENT_ID}:{CLIENT_SECRET}")
    assert leaked([str(resolved)], forms) == []
    check_texts([resolved.credentials.token_type], forms)


# --- provider errors: Vault's error bodies, a command's stderr --------------------------------


def echo_of(token: str) -> str:
    """How the backends below say a token back: upper-cased, in base64 and URL-encoded, over
    several lines, one shaped like a log line of the service."""
    return (f"token {token.upper()} is not allowed\n(base64 {b64(token)}, sent as {quote_plus(token)})\r\n"
            f"{PROVIDER_FORGED_LINE}\n")


class EchoingVault:
    """A Vault stand-in on loopback: every request is refused (403) with an error that says the
    request's X-Vault-Token back (`echo_of`). `requests` counts what it answered."""

    def __init__(self) -> None:
        owner = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.requests += 1
                body = json.dumps({"errors": [echo_of(self.headers.get("X-Vault-Token", ""))]}).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> EchoingVault:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_vault_error_echoing_the_token_shows_none_of_it(service: Service, fmt: str) -> None:
    with EchoingVault() as vault:
        instance = pb.ProviderInstance(name="echoing-vault", provider_type="vault")
        instance.initialization["Host"].value = vault.address
        instance.initialization["Token"].value = VAULT_TOKEN
        created = service.providers.CreateProvider(pb.CreateProviderRequest(provider=instance), timeout=10).provider
        with server_log(fmt) as out:
            refused = check_secret(service, created.id, Secret="relay", Key="password")
        assert vault.requests >= 1

    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    forms = encodings(VAULT_TOKEN)
    check_texts([refused.details()], forms)
    assert "FORGED by the backend" in refused.details(), "Vault's words are shown, cleaned"
    check_texts(audit_messages(service, "SecretProviderService/CheckSecret"), forms)
    check_log(out, fmt, forms, "FORGED by the backend")


# Prints 10,000 characters and 3,800 newlines, then the token back (`echo_of`), then more lines.
NOISY_COMMAND = """#!/bin/sh
head -c 10000 /dev/zero | tr '\\0' x >&2
head -c 3800 /dev/zero | tr '\\0' '\\n' >&2
t="$SMTPCONFIG_INIT_TOKEN"
printf 'token %s is not allowed\\n' "$(printf '%s' "$t" | tr '[:lower:]' '[:upper:]')" >&2
printf '(base64 %s)\\r\\n' "$(printf '%s' "$t" | base64)" >&2
printf '%s\\n' '""" + PROVIDER_FORGED_LINE + """' >&2
for i in 1 2 3 4 5 6 7 8 9 10; do printf 'more detail, line %s of ten\\n' "$i" >&2; done
exit 3
"""


@pytest.fixture
def noisy_exec(net: Net, tmp_path: Path) -> Iterator[Service]:
    """A service with an exec instance declared in its config ([[providers]]), running
    NOISY_COMMAND with EXEC_TOKEN (read from a file) as its Token."""
    command = tmp_path / "vendor-cli"
    command.write_text(NOISY_COMMAND)
    command.chmod(0o755)
    token = tmp_path / "exec.token"
    token.write_text(EXEC_TOKEN + "\n")
    declared = ({"id": 31, "name": "noisy-cli", "type": "exec",
                 "initialization": {"Command": json.dumps([str(command)]), "Token": {"file": str(token)}}},)
    svc = Service(net, providers=declared, **CALLERS)
    try:
        yield svc
    finally:
        svc.close()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_command_echoing_its_token_on_stderr_shows_none_of_it(noisy_exec: Service, fmt: str) -> None:
    with server_log(fmt) as out:
        refused = check_secret(noisy_exec, 31, Name="relay-password")

    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    details = refused.details()
    forms = encodings(EXEC_TOKEN)
    check_texts([details], forms)
    assert "command exited with status 3" in details and "FORGED by the backend" in details, "stderr is shown, cleaned"
    assert details.endswith("…[cut]"), "and cut"
    check_texts(audit_messages(noisy_exec, "SecretProviderService/CheckSecret"), forms)
    check_log(out, fmt, forms, "FORGED by the backend")
