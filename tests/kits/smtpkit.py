"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, a free port, in a background thread.

`SmtpServer` speaks plaintext, STARTTLS or implicit TLS with certificates from `tests.kits.testca`,
authenticates AUTH PLAIN and LOGIN against a credentials dict and XOAUTH2 through a
`bearer_check(user, token)` callable, and records what it saw: every message (envelope and parsed
headers), every AUTH attempt (mechanism, user name, outcome, whether the connection was
encrypted) and how many connections it accepted. Passwords and tokens are checked and dropped,
never recorded or logged.

    with SmtpServer("starttls", credentials={"relay": "pw"}) as smtp:
        ...  # the code under test connects to smtp.host:smtp.port, trusting smtp.certs.ca
        message = smtp.wait_for_message()
        assert message.mail_from == "relay@example.com"

Failure scenarios are options rather than mocks: `offer_starttls=False` (a server that does not
offer STARTTLS), `certs=pki.other_host` or `certs=pki.self_signed`, `auth_failure_replies` for the
exact text a provider returns (Microsoft's "535 5.7.139 ... basic authentication is disabled"),
`auth_echo` for a relay whose failure reply quotes what the client sent (see `ECHO_FORGED_LINE`),
and `unused_port()`/`refusing_port()` for a server that is down.

Notes on aiosmtpd 1.4 that shaped this:
- The listening socket is bound here on port 0 and handed to asyncio, so there is no free-port
  guessing and no race with other processes for the port.
- aiosmtpd only counts STARTTLS as encryption: with implicit TLS and `auth_require_tls` it would
  neither advertise AUTH nor accept it. Implicit mode therefore turns that check off; every byte of
  such a session is encrypted anyway.
- Custom AUTH mechanisms are `auth_<NAME>(server, args)` methods on the handler; XOAUTH2 is one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.policy
import hmac
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from tests.kits.testca import CertPaths, make_pki

Mode = Literal["plain", "starttls", "implicit"]
MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2")
DEFAULT_FAILURE_REPLY = "535 5.7.8 Authentication credentials invalid"  # aiosmtpd's own text
#: With `auth_echo`, a line of the failure reply shaped like one of the service's text log lines.
ECHO_FORGED_LINE = "2026-01-01T00:00:00.000Z INFO smtpconfig.api.calls FORGED by the relay"
GREETING_NAME = "smtp.test"  # also spares aiosmtpd a socket.getfqdn() per connection


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH command. `username` is None when the server refused before reading credentials
    (AUTH on an unencrypted connection while `auth_require_tls` is on) or could not parse them."""

    mechanism: str
    username: str | None
    success: bool
    tls: bool


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: the SMTP envelope, the parsed message and how it arrived."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage  # parsed with email.policy.default: headers come back decoded (RFC 2047)
    raw: bytes
    tls: bool
    authenticated_as: str | None


def _is_tls(server: SMTP) -> bool:
    # After STARTTLS and with implicit TLS alike, the transport is asyncio's SSL transport.
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _QuietSession(Session):
    """aiosmtpd's Session logs a deprecation warning whenever smtp_AUTH sets `login_data`.
    `auth_lines` keeps the base64 lines of the AUTH exchange in progress, for `auth_echo`."""

    auth_lines: list[str]

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, also recording AUTH commands refused for lack of TLS: a client that sends
    AUTH PLAIN with an initial response has put its credentials on the wire by then."""

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: Any) -> None:
        # aiosmtpd calls this again on the TLS transport after STARTTLS: one connection, counted once.
        fresh = self._original_transport is None
        super().connection_made(transport)
        if fresh:
            self.event_handler.record_connection()

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        answer = await super().challenge_auth(challenge, encode_to_b64, log_client_response)
        if isinstance(answer, bytes) and self.session is not None:
            # What the client sent, re-encoded (it was valid base64, so this is the same line).
            self.session.auth_lines.append(base64.b64encode(answer).decode("ascii"))
        return answer

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None
        self.session.auth_lines = arg.split()[1:2]  # the initial response, when there is one
        if (arg and self.session.extended_smtp and self._auth_require_tls and not _is_tls(self)
                and not self.session.authenticated):
            self.event_handler.record_auth(AuthAttempt(arg.split()[0].upper(), None, False, False))
        await super().smtp_AUTH(arg)


class _Handler:
    """aiosmtpd handler: message recording, the PLAIN/LOGIN authenticator and XOAUTH2."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    def record_auth(self, attempt: AuthAttempt) -> None:
        self._owner._record(self._owner._auth_attempts, attempt)

    def record_connection(self) -> None:
        with self._owner._lock:
            self._owner._connections += 1

    def _failure(self, mechanism: str, session: Session | None) -> str:
        lines = getattr(session, "auth_lines", [])
        if self._owner.auth_echo and lines:
            return _echo(lines)
        return self._owner.auth_failure_replies.get(mechanism, DEFAULT_FAILURE_REPLY)

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """The `authenticator` for aiosmtpd's built-in PLAIN and LOGIN."""
        assert isinstance(auth_data, LoginPassword)
        username = auth_data.login.decode("utf-8", "replace")
        expected = self._owner.credentials.get(username)
        ok = expected is not None and hmac.compare_digest(expected.encode(), auth_data.password)
        self.record_auth(AuthAttempt(mechanism, username, ok, _is_tls(server)))
        if ok:
            # Only the user name goes on the session: aiosmtpd would otherwise keep the password there.
            return AuthResult(success=True, auth_data=username)
        return AuthResult(success=False, handled=False, message=self._failure(mechanism, session))

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2: base64 of `user=<u>\\x01auth=Bearer <token>\\x01\\x01`, as the initial
        response or after an empty 334 challenge."""
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:  # challenge_auth has already replied
                self.record_auth(AuthAttempt("XOAUTH2", None, False, _is_tls(server)))
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                blob = b""
        parsed = _parse_xoauth2(blob)
        if parsed is None:
            self.record_auth(AuthAttempt("XOAUTH2", None, False, _is_tls(server)))
            await server.push("501 5.5.2 Malformed XOAUTH2 initial response")
            return AuthResult(success=False, handled=True)
        user, token = parsed
        check = self._owner.bearer_check
        ok = bool(check is not None and check(user, token))
        self.record_auth(AuthAttempt("XOAUTH2", user, ok, _is_tls(server)))
        if ok:
            return AuthResult(success=True, auth_data=user)
        if self._owner.xoauth2_error_challenge:
            # Gmail's way: a 334 carrying a JSON error, answered by the client with an empty line,
            # then the final failure reply.
            error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
            await server.challenge_auth(error)
        return AuthResult(success=False, handled=False, message=self._failure("XOAUTH2", server.session))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        received = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            raw=raw,
            tls=_is_tls(server),
            authenticated_as=session.auth_data if session.authenticated else None,
        )
        self._owner._record(self._owner._messages, received)
        return "250 2.0.0 OK queued"


def _echo(lines: list[str]) -> str:
    """A multi-line 535 quoting the client's AUTH lines as sent, upper-cased and decoded (NUL and
    \\x01 included), with a bare CR, a line shaped like a log line of the service, and 2,400
    characters more."""
    sent = " ".join(lines)
    decoded = " ".join(base64.b64decode(line).decode("utf-8", "replace") for line in lines)
    return "\r\n".join((
        f"535-5.7.8 rejected AUTH {sent}",
        f"535-5.7.8 REJECTED AUTH {sent.upper()}",
        f"535-5.7.8 decoded\r{decoded}",
        f"535-{ECHO_FORGED_LINE}",
        "535-5.7.8 " + "more detail " * 200,
        "535 5.7.8 Authentication credentials invalid",
    ))


def _parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\x01\x01"):
        return None
    fields = dict(f.split("=", 1) for f in text[:-2].split("\x01") if "=" in f)
    user, auth = fields.get("user"), fields.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if not user or scheme.lower() != "bearer" or not token:
        return None
    return user, token


class _Controller(Controller):
    """aiosmtpd's threaded Controller, serving on a socket bound beforehand (port 0), and building
    `_RecordingSMTP` sessions."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    def _trigger_server(self) -> None:
        # aiosmtpd's version builds its throwaway client context with create_default_context(),
        # which loads the system CA store: tens of milliseconds per implicit-TLS server.
        with socket.create_connection((self.hostname, self.port), 1.0) as sock:
            if self.ssl_context is None:
                sock.recv(1024)
                return
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # only wakes the server up; nothing is sent
            with context.wrap_socket(sock) as tls:
                tls.recv(1024)

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, **self.SMTP_kwargs)


def _listening_socket(host: str) -> socket.socket:
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # socket.create_server() leaves it 0. With Nagle on, each multi-line reply (EHLO) stalls ~40 ms
    # on the client's delayed ACK.
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((host, 0))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def _server_context(certs: CertPaths) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    return context


class SmtpServer:
    """A real SMTP server on `host` (127.0.0.1) and a free port, known from construction on
    (`.host`, `.port`). It runs once: `stop()` releases the port, after which connections are
    refused (a "server went down" case); build a new one to serve again.

    mode: "plain" (no TLS), "starttls" (STARTTLS offered on a plain connection) or "implicit"
        (TLS from the first byte, as on port 465).
    certs: the server certificate; by default a fresh test CA's leaf for localhost, 127.0.0.1 and
        ::1 (see `certs.ca` for the bundle to trust). Pass `pki.other_host` or `pki.self_signed`
        from `tests.kits.testca.make_pki` for the certificate failure cases.
    offer_starttls: False makes a "starttls" server neither advertise nor accept STARTTLS
        (454), as a server that does not offer it.
    require_starttls: aiosmtpd's: refuse everything but EHLO/NOOP/QUIT/STARTTLS before STARTTLS.
    auth_require_tls: aiosmtpd's: AUTH is neither advertised nor accepted (538) without TLS.
        Ignored in implicit mode, where the whole session is encrypted.
    mechanisms: AUTH mechanisms offered, out of PLAIN, LOGIN and XOAUTH2.
    credentials: user name -> password for PLAIN and LOGIN.
    bearer_check: `(user, token) -> bool` for XOAUTH2; without one every token is refused.
    auth_failure_replies: mechanism -> full reply line sent when that mechanism fails, instead of
        "535 5.7.8 Authentication credentials invalid".
    xoauth2_error_challenge: on a refused token, first send Gmail's 334 JSON error challenge.
    auth_echo: a failed AUTH is answered with a multi-line 535 that quotes the client's AUTH
        lines (base64 as sent, upper-cased, decoded), holds a bare CR, a line shaped like one of
        the service's log lines (`ECHO_FORGED_LINE`) and 2,400 characters of padding: a careless
        or hostile relay.
    """

    def __init__(
        self,
        mode: Mode = "plain",
        *,
        certs: CertPaths | None = None,
        offer_starttls: bool = True,
        require_starttls: bool = False,
        auth_require_tls: bool = True,
        mechanisms: Iterable[str] = MECHANISMS,
        credentials: Mapping[str, str] | None = None,
        bearer_check: Callable[[str, str], bool] | None = None,
        auth_failure_replies: Mapping[str, str] | None = None,
        xoauth2_error_challenge: bool = False,
        auth_echo: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        if mode not in ("plain", "starttls", "implicit"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mechanisms = tuple(m.upper() for m in mechanisms)
        unknown = set(self.mechanisms) - set(MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms: {sorted(unknown)}")
        self.auth_failure_replies = {k.upper(): v for k, v in (auth_failure_replies or {}).items()}
        for reply in self.auth_failure_replies.values():
            if not (reply[:3].isdigit() and reply[3:4] in (" ", "")):
                raise ValueError(f"a failure reply starts with a 3-digit code and a space: {reply!r}")
        self.mode = mode
        self.credentials = dict(credentials or {})
        self.bearer_check = bearer_check
        self.xoauth2_error_challenge = xoauth2_error_challenge
        self.auth_echo = auth_echo
        self._tmp: tempfile.TemporaryDirectory | None = None
        if certs is None and mode != "plain":
            self._tmp = tempfile.TemporaryDirectory(prefix="smtpkit-")
            certs = make_pki(Path(self._tmp.name)).localhost
        self.certs = certs
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._auth_attempts: list[AuthAttempt] = []
        self._connections = 0

        context = _server_context(certs) if certs is not None and mode != "plain" else None
        self._sock = _listening_socket(host)
        self.host, self.port = self._sock.getsockname()[:2]
        handler = _Handler(self)
        self._controller = _Controller(
            handler,
            self._sock,
            ssl_context=context if mode == "implicit" else None,
            tls_context=context if mode == "starttls" and offer_starttls else None,
            require_starttls=require_starttls,
            auth_require_tls=auth_require_tls and mode != "implicit",
            authenticator=handler.authenticate,
            auth_exclude_mechanism=[m for m in MECHANISMS if m not in self.mechanisms],
            server_hostname=GREETING_NAME,
        )
        self._started = False

    # Recording, called from the server thread.
    def _record(self, into: list, item: Any) -> None:
        with self._lock:
            into.append(item)
            self._lock.notify_all()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        """AUTH commands seen so far, oldest first (a copy)."""
        with self._lock:
            return list(self._auth_attempts)

    @property
    def connections(self) -> int:
        """Connections accepted since `start()` returned (for "refused before dialling" tests)."""
        with self._lock:
            return self._connections

    def wait_for_message(self, timeout: float = 5.0, count: int = 1) -> ReceivedMessage:
        """Block until `count` messages have arrived and return the `count`-th."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} of {count} message(s) within {timeout} s")
            return self._messages[count - 1]

    def start(self) -> SmtpServer:
        try:
            self._controller.start()
        except BaseException:
            self._sock.close()
            self._cleanup_certs()
            raise
        self._started = True
        with self._lock:
            # The controller's own wake-up connection has been served by now (it read the
            # banner): it is not one of the connections a test asks about.
            self._connections = 0
        return self

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False
        self._sock.close()
        self._cleanup_certs()

    def _cleanup_certs(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def unused_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process could take it later: for a "server
    down" test that must not be flaky, use `refusing_port`)."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port held bound but not listening while the block runs: connections to it are refused
    (ECONNREFUSED) and no other process can start listening on it meanwhile."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
