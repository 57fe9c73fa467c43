"""Self-tests of the SMTP test kit (`tests.kits.smtpkit`, `tests.kits.testca`), with Python's smtplib as the
client: they show the server really does TLS, AUTH and recording the way the service's tests will
rely on. Everything runs on loopback."""

from __future__ import annotations

import base64
import email.policy
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.kits.smtpkit import ECHO_FORGED_LINE, AuthAttempt, SmtpServer, refusing_port, unused_port
from tests.kits.testca import TestPKI, make_pki

USER, PASSWORD = "relay-user", "relay-password-1"  # smtplib sends AUTH strings as ASCII
SENDER, RECIPIENT = "relay@example.com", "ops@example.org"
GOOD_TOKEN = "token-issued-by-the-endpoint"
TIMEOUT = 5


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def connect(server: SmtpServer, ca: Path | None = None, host: str | None = None) -> smtplib.SMTP:
    """An smtplib client that has said EHLO, over TLS when the server does TLS."""
    host = host or server.host
    ca = ca or (server.certs.ca if server.certs else None)
    if server.mode == "implicit":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, server.port, timeout=TIMEOUT, context=trusting(ca))
    else:
        client = smtplib.SMTP(host, server.port, timeout=TIMEOUT)
    try:
        client.ehlo()
        if server.mode == "starttls":
            client.starttls(context=trusting(ca))
            client.ehlo()
    except BaseException:
        client.close()
        raise
    return client


def xoauth2(user: str, token: str):
    """An smtplib auth object for XOAUTH2: the SASL string first, an empty reply to an error
    challenge."""
    sasl = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return lambda challenge=None: sasl if not challenge else ""


def send_test_message(client: smtplib.SMTP, display_name: str = "Example Relay") -> bytes:
    message = EmailMessage()
    message["From"] = Address(display_name, addr_spec=SENDER)
    message["To"] = RECIPIENT
    message["Subject"] = "smtpconfig test message"
    message.set_content("It works.\n")
    raw = message.as_bytes(policy=email.policy.SMTP)
    client.sendmail(SENDER, [RECIPIENT], raw)
    return raw


def test_plaintext_send_is_recorded():
    with SmtpServer("plain") as server, connect(server) as client:
        assert not client.has_extn("starttls")
        send_test_message(client)
        received = server.wait_for_message()
    assert received.mail_from == SENDER
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.message["From"].addresses[0].addr_spec == SENDER
    assert received.message["Subject"] == "smtpconfig test message"
    assert (received.tls, received.authenticated_as) == (False, None)
    assert server.auth_attempts == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["ip-san", "dns-san"])
def test_tls_verified_against_the_test_ca(pki, mode, host):
    with SmtpServer(mode, certs=pki.localhost) as server, connect(server, pki.ca, host) as client:
        cert = client.sock.getpeercert()
        assert ("DNS", "localhost") in cert["subjectAltName"]
        send_test_message(client)
        assert server.wait_for_message().tls is True


def test_default_certificate_comes_with_its_own_ca():
    with SmtpServer("implicit") as server, connect(server) as client:
        assert server.certs is not None and server.certs.ca.exists()
        assert client.noop()[0] == 250
    assert not server.certs.ca.exists()  # the kit's temporary PKI is gone with the server


# (mechanism, user, password, reply code, recorded success, why)
BASIC_CASES = [
    ("PLAIN", USER, PASSWORD, 235, True, "right password"),
    ("PLAIN", USER, "wrong", 535, False, "wrong password"),
    ("PLAIN", "nobody", PASSWORD, 535, False, "unknown user"),
    ("LOGIN", USER, PASSWORD, 235, True, "right password"),
    ("LOGIN", USER, "wrong", 535, False, "wrong password"),
]


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("mechanism,user,password,code,success,why", BASIC_CASES,
                         ids=[f"{c[0]}-{c[5]}" for c in BASIC_CASES])
def test_basic_auth_checks_user_and_password(pki, mode, mechanism, user, password, code, success, why):
    with SmtpServer(mode, certs=pki.localhost, credentials={USER: PASSWORD}) as server, \
            connect(server) as client:
        assert client.has_extn("auth")
        client.user, client.password = user, password
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        if success:
            assert client.auth(mechanism, method)[0] == code
            send_test_message(client)
            assert server.wait_for_message().authenticated_as == USER
        else:
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.auth(mechanism, method)
            assert failed.value.smtp_code == code
            assert failed.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    assert server.auth_attempts == [AuthAttempt(mechanism, user, success, True)]
    assert password not in repr(server.auth_attempts)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_echo_quotes_what_the_client_sent(pki, mechanism):
    with SmtpServer("starttls", certs=pki.localhost, credentials={USER: PASSWORD}, auth_echo=True) as server, \
            connect(server) as client:
        client.user, client.password = USER, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth(mechanism, client.auth_plain if mechanism == "PLAIN" else client.auth_login)
    sent = [base64.b64encode(f"\0{USER}\0wrong".encode()).decode()] if mechanism == "PLAIN" else \
        [base64.b64encode(USER.encode()).decode(), base64.b64encode(b"wrong").decode()]
    reply = failed.value.smtp_error.decode()
    assert failed.value.smtp_code == 535
    assert f"rejected AUTH {' '.join(sent)}\n" in reply and " ".join(sent).upper() in reply
    decoded = f"\0{USER}\0wrong" if mechanism == "PLAIN" else f"{USER} wrong"
    assert f"decoded\r{decoded}\n" in reply
    assert f"\n{ECHO_FORGED_LINE}\n" in reply and len(reply) > 2400


# (token the client sends, reply code, why)
XOAUTH2_CASES = [
    (GOOD_TOKEN, 235, "token the endpoint issued"),
    ("expired-or-unknown", 535, "token the endpoint never issued"),
]


@pytest.mark.parametrize("initial_response", [True, False], ids=["initial-response", "after-334"])
@pytest.mark.parametrize("token,code,why", XOAUTH2_CASES, ids=[c[2] for c in XOAUTH2_CASES])
def test_xoauth2_checks_the_bearer_token(pki, initial_response, token, code, why):
    seen: list[tuple[str, str]] = []

    def bearer_check(user: str, token: str) -> bool:
        seen.append((user, token))
        return token == GOOD_TOKEN

    with SmtpServer("starttls", certs=pki.localhost, bearer_check=bearer_check) as server, \
            connect(server) as client:
        if code == 235:
            reply = client.auth("XOAUTH2", xoauth2(SENDER, token), initial_response_ok=initial_response)
            assert reply[0] == 235
            send_test_message(client)
            assert server.wait_for_message().authenticated_as == SENDER
        else:
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.auth("XOAUTH2", xoauth2(SENDER, token), initial_response_ok=initial_response)
            assert failed.value.smtp_code == code
    assert seen == [(SENDER, token)]
    assert server.auth_attempts == [AuthAttempt("XOAUTH2", SENDER, code == 235, True)]
    assert token not in repr(server.auth_attempts)


def test_xoauth2_gmail_style_error_challenge(pki):
    with SmtpServer("implicit", certs=pki.localhost, bearer_check=lambda u, t: False,
                    xoauth2_error_challenge=True) as server, connect(server) as client:
        challenges: list[bytes] = []
        sasl = f"user={SENDER}\x01auth=Bearer stale\x01\x01"

        def auth(challenge=None):
            if challenge:
                challenges.append(challenge)
                return ""
            return sasl

        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth("XOAUTH2", auth)
    assert failed.value.smtp_code == 535
    assert b'"status": "401"' in challenges[0]


def test_xoauth2_malformed_response_is_a_syntax_error(pki):
    with SmtpServer("implicit", certs=pki.localhost, bearer_check=lambda u, t: True) as server, \
            connect(server) as client:
        blob = base64.b64encode(b"user=x\x01auth=Basic abc\x01\x01").decode()
        assert client.docmd("AUTH", f"XOAUTH2 {blob}")[0] == 501
    assert server.auth_attempts == [AuthAttempt("XOAUTH2", None, False, True)]


MICROSOFT_BASIC_DISABLED = "535 5.7.139 Authentication unsuccessful, basic authentication is disabled"
MICROSOFT_OAUTH_REFUSED = "535 5.7.3 Authentication unsuccessful"


@pytest.mark.parametrize("mechanism,reply", [
    ("PLAIN", MICROSOFT_BASIC_DISABLED),
    ("LOGIN", MICROSOFT_BASIC_DISABLED),
    ("XOAUTH2", MICROSOFT_OAUTH_REFUSED),
])
def test_configured_failure_reply_reaches_the_client(pki, mechanism, reply):
    with SmtpServer("starttls", certs=pki.localhost, credentials={},
                    auth_failure_replies={mechanism: reply}) as server, connect(server) as client:
        client.user, client.password = USER, PASSWORD
        method = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login,
                  "XOAUTH2": xoauth2(SENDER, "whatever")}[mechanism]
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth(mechanism, method)
    assert (failed.value.smtp_code, failed.value.smtp_error.decode()) == (535, reply[4:])
    assert [a.success for a in server.auth_attempts] == [False]


def test_only_the_configured_mechanisms_are_offered(pki):
    with SmtpServer("implicit", certs=pki.localhost, mechanisms=["XOAUTH2"],
                    credentials={USER: PASSWORD}) as server, connect(server) as client:
        assert client.esmtp_features["auth"].split() == ["XOAUTH2"]
        client.user, client.password = USER, PASSWORD
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth("PLAIN", client.auth_plain)
        assert failed.value.smtp_code == 504
    assert server.auth_attempts == []


@pytest.mark.parametrize("offer,advertised,reply", [
    (True, True, 220),
    (False, False, 454),
], ids=["offered", "not-offered"])
def test_starttls_offer_can_be_withdrawn(pki, offer, advertised, reply):
    with SmtpServer("starttls", certs=pki.localhost, offer_starttls=offer) as server, \
            smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls") is advertised
        assert client.docmd("STARTTLS")[0] == reply


def test_require_starttls_refuses_mail_before_tls(pki):
    with SmtpServer("starttls", certs=pki.localhost, require_starttls=True) as server, \
            smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 530


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("certs,trust,verify_code,why", [
    ("other_host", "ca", 64, "IP address mismatch: the leaf names other.example only"),
    ("self_signed", "ca", 18, "self-signed: the test CA did not sign it"),
])
def test_certificate_failures(pki, mode, certs, trust, verify_code, why):
    with SmtpServer(mode, certs=getattr(pki, certs)) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            connect(server, pki.ca).close()
        assert failed.value.verify_code == verify_code, failed.value.verify_message
    assert server.messages == [] and server.auth_attempts == []


def test_other_host_certificate_fails_by_name_too(pki):
    with SmtpServer("implicit", certs=pki.other_host) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            connect(server, pki.ca, host="localhost").close()
    assert "Hostname mismatch" in failed.value.verify_message


def test_self_signed_certificate_verifies_when_trusted_itself(pki):
    """The control for the case above: the leaf is well formed, only unknown to the CA."""
    with SmtpServer("implicit", certs=pki.self_signed) as server, \
            connect(server, pki.self_signed.ca) as client:
        assert client.noop()[0] == 250


@pytest.mark.parametrize("auth_require_tls,advertised,code,attempt", [
    (True, False, 538, AuthAttempt("PLAIN", None, False, False)),
    (False, True, 235, AuthAttempt("PLAIN", USER, True, False)),
], ids=["refused", "allowed"])
def test_auth_over_plaintext(auth_require_tls, advertised, code, attempt):
    with SmtpServer("plain", auth_require_tls=auth_require_tls, credentials={USER: PASSWORD}) as server, \
            connect(server) as client:
        assert client.has_extn("auth") is advertised
        initial = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert client.docmd("AUTH", f"PLAIN {initial}")[0] == code
    # The attempt is recorded even when refused: the credentials were on the wire regardless.
    assert server.auth_attempts == [attempt]


def test_non_ascii_sender_name_travels_rfc2047_encoded():
    name = "Jürgen Müller – 東京 Relay"
    with SmtpServer("plain") as server, connect(server) as client:
        raw = send_test_message(client, name)
        received = server.wait_for_message()
    unfolded = raw.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    from_line = next(line for line in unfolded.split(b"\r\n") if line.startswith(b"From:"))
    assert from_line.isascii() and b"=?utf-8?" in from_line
    assert received.raw == raw
    assert received.message["From"].addresses[0].display_name == name
    assert received.message["From"].addresses[0].addr_spec == SENDER


def test_wait_for_message_times_out():
    with SmtpServer("plain") as server:
        with pytest.raises(TimeoutError):
            server.wait_for_message(timeout=0.05)


def test_server_down():
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", unused_port(), timeout=TIMEOUT)
    with refusing_port() as port, pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)


def test_stopped_server_refuses_connections():
    server = SmtpServer("plain").start()
    port = server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)


@pytest.mark.parametrize("kwargs,why", [
    ({"mode": "tls"}, "unknown mode"),
    ({"mechanisms": ["CRAM-MD5"]}, "mechanism the kit does not implement"),
    ({"auth_failure_replies": {"PLAIN": "no code"}}, "failure reply without a reply code"),
])
def test_bad_options_are_refused(kwargs, why):
    with pytest.raises(ValueError):
        SmtpServer(**kwargs)
