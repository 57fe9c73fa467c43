"""One SMTP exchange with the relay, step by step: connect, TLS, auth, send.

It runs on a worker thread (smtplib blocks) and reports every step with its outcome, duration, the
SMTP reply code and a hint for known failures. The relay's name is looked up once, on that thread
(`smtpconfig.core.netguard.check_destination_blocking`: one thread hop per test rather than one
more for the event loop's resolver; the lookup has the system resolver's timeouts and counts in the
connect step), and the exchange connects to exactly the addresses that check allowed, while TLS
verifies the certificate against the profile's host name. Credentials never go over a connection
without TLS unless the operator allowed it. No secret is put in a report, and the relay's reply
text goes through the exchange's `Scrubber`, which knows every AUTH payload sent: a relay may echo
one back.

Once the outcome is known the steps go to `Exchange.answer`, so the caller can reply while the
thread says QUIT and closes the connection. The message is `smtpconfig.outbound.message`'s, the
bytes `send_message` would send, built from a template.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpconfig.core.errors import SmtpConfigError
from smtpconfig.core.netguard import check_destination_blocking
from smtpconfig.core.scrub import Scrubber
from smtpconfig.core.secret import Secret
from smtpconfig.outbound.message import message_bytes

IMPLICIT_TLS_PORT = 465
OK, FAILED, SKIPPED = "ok", "failed", "skipped"

# Known 535 replies (by enhanced status code in the text) and what to do about them.
_AUTH_HINTS = (
    ("5.7.139", "basic authentication is disabled for this tenant or mailbox;"
                " use OAuth client credentials (RelayAuthenticationType 3)"),
    ("5.7.3", "the account or app is not permitted to send over SMTP AUTH;"
              " enable SMTP AUTH for the mailbox or grant the app SMTP.SendAsApp"),
)


@dataclass
class Step:
    """One step of a test, as reported to the caller."""

    name: str
    outcome: str
    duration: float = 0.0
    smtp_code: int = 0
    message: str = ""
    hint: str = ""


@dataclass
class Exchange:
    """What the SMTP part needs: where, how, as whom, and what to send."""

    host: str
    port: int
    use_ssl: bool
    sender_account: str
    sender_name: str
    recipient: str
    timeout: float
    context: ssl.SSLContext
    allow_plaintext_auth: bool = False
    implicit_tls_ports: tuple[int, ...] = (IMPLICIT_TLS_PORT,)
    username: Secret | None = None  # Basic
    password: Secret | None = None  # Basic
    xoauth2_user: str = ""  # OAuth
    # OAuth: returns a token; called again with fresh=True after the server refused one.
    bearer: Callable[[bool], Secret] | None = None
    # Basic: the username and password resolved again past every cache, after a 535; it returns
    # None when they are unchanged and raises when that fails. None: no second try.
    basic_again: Callable[[], tuple[Secret, Secret] | None] | None = None
    steps: list[Step] = field(default_factory=list)
    # Set when the caller is gone (cancelled, past its deadline): no further step is taken, and
    # above all no message is sent for a test nobody waits for.
    abandoned: threading.Event = field(default_factory=threading.Event)
    client: smtplib.SMTP | None = None
    # Given the final steps once the session has an outcome, before QUIT: the caller can answer
    # while the connection closes. Not called when the exchange raised.
    answer: Callable[[list[Step]], None] | None = None
    # Told of each credential and AUTH payload as it is sent; cleans every reply text reported.
    scrubber: Scrubber = field(default_factory=Scrubber)


def abandon(exchange: Exchange) -> None:
    """Stop `exchange` from another thread: no further step, and a blocked read is woken."""
    exchange.abandoned.set()
    client = exchange.client
    sock = getattr(client, "sock", None) if client is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Pinned(smtplib.SMTP):
    """Dials a checked address while TLS still verifies the profile's host name."""

    def __init__(
        self, host: str, addresses: tuple[str, ...], timeout: float, context: ssl.SSLContext | None,
        abandoned: threading.Event | None = None,
    ) -> None:
        self._addresses = addresses
        self._implicit = context
        self._abandoned = abandoned or threading.Event()
        super().__init__(timeout=timeout)
        self._host = host  # what smtplib's STARTTLS verifies the certificate against

    def _get_socket(self, host, port, timeout):  # noqa: ANN001 - smtplib's signature
        last: OSError | None = None
        for address in self._addresses:
            try:
                sock = socket.create_connection((address, port), timeout)
            except OSError as error:
                last = error
                continue
            # Published before the check, as `abandon` sets its flag before it looks for a socket:
            # whichever comes second sees the other, so an abandoned dial never reads a banner.
            self.sock = sock
            if self._abandoned.is_set():
                sock.close()
                raise OSError("the test was abandoned by its caller")
            if self._implicit is not None:
                try:
                    return self._implicit.wrap_socket(sock, server_hostname=self._host)
                except BaseException:
                    sock.close()
                    raise
            return sock
        raise last or OSError("no address to connect to")


def run(exchange: Exchange) -> list[Step]:
    """Run the exchange, appending steps to `exchange.steps`; stop at the first failure."""
    implicit = exchange.use_ssl and exchange.port in exchange.implicit_tls_ports
    if exchange.username is not None and exchange.password is not None:
        exchange.scrubber.smtp_login(exchange.username, exchange.password)
    if exchange.abandoned.is_set():
        return exchange.steps
    started = time.monotonic()
    try:
        destination = check_destination_blocking(exchange.host, exchange.port, what="SMTP host")
    except SmtpConfigError as error:
        exchange.steps.append(_timed(Step("connect", FAILED, message=str(error),
                                          hint="check that the relay is reachable from here"), started))
        return exchange.steps
    addresses = tuple(str(a) for a in destination.addresses)
    client = _Pinned(
        exchange.host, addresses, exchange.timeout, exchange.context if implicit else None, exchange.abandoned
    )
    exchange.client = client
    if exchange.abandoned.is_set():
        return exchange.steps
    step = Step("connect", OK)
    try:
        code, banner = client.connect(exchange.host, exchange.port)
        step.smtp_code = code
        step.message = f"connected to {exchange.host}:{exchange.port}"
    except ssl.SSLError as error:
        exchange.steps.append(_timed(Step("connect", OK, message=f"connected to {exchange.host}:{exchange.port}"), started))
        exchange.steps.append(_tls_failure(error, started))
        return exchange.steps
    except (OSError, smtplib.SMTPException) as error:
        exchange.steps.append(_timed(_connect_failure(error, exchange), started))
        return exchange.steps
    exchange.steps.append(_timed(step, started))
    try:
        _session(client, exchange, implicit)
    except BaseException:
        _goodbye(client)
        raise
    try:
        if exchange.answer is not None:
            exchange.answer(exchange.steps)  # final: QUIT is in no step and changes no outcome
    finally:
        _goodbye(client)
    return exchange.steps


def _session(client: smtplib.SMTP, exchange: Exchange, implicit: bool) -> None:
    """TLS, AUTH and the message, each only after the one before it succeeded."""
    if exchange.abandoned.is_set() or not _tls(client, exchange, implicit):
        return
    if exchange.abandoned.is_set() or not _auth(client, exchange):
        return
    if not exchange.abandoned.is_set():
        _send(client, exchange)


def _goodbye(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _timed(step: Step, started: float) -> Step:
    step.duration = time.monotonic() - started
    return step


def _connect_failure(error: BaseException, exchange: Exchange) -> Step:
    where = f"{exchange.host}:{exchange.port}"
    if isinstance(error, (TimeoutError, socket.timeout)):
        message = f"no answer from {where} within {exchange.timeout:g}s"
    elif isinstance(error, smtplib.SMTPConnectError):
        return Step("connect", FAILED, smtp_code=error.smtp_code,
                    message=f"{where} refused the session: {_text(error.smtp_error, exchange)}",
                    hint="the relay is reachable but does not accept sessions from this client")
    else:
        message = f"cannot connect to {where}: {type(error).__name__}"
    hint = "check that the relay is reachable from here (host, port, firewall)"
    if exchange.use_ssl and exchange.port not in exchange.implicit_tls_ports:
        hint += "; port 465 expects implicit TLS, 587 and 25 STARTTLS"
    return Step("connect", FAILED, message=message, hint=hint)


def _tls(client: smtplib.SMTP, exchange: Exchange, implicit: bool) -> bool:
    started = time.monotonic()
    if not exchange.use_ssl:
        exchange.steps.append(Step("tls", SKIPPED, message="UseSSL is false: no TLS"))
        return True
    if implicit:
        exchange.steps.append(_timed(Step("tls", OK, message=f"implicit TLS ({_version(client)})"), started))
        return True
    try:
        code, _ = client.ehlo()
        if not client.has_extn("starttls"):
            exchange.steps.append(_timed(Step(
                "tls", FAILED, smtp_code=code, message="the server does not offer STARTTLS",
                hint="UseSSL requires TLS: enable STARTTLS on the relay, use port 465 for implicit TLS, or set UseSSL false",
            ), started))
            return False
        code, reply = client.starttls(context=exchange.context)
    except ssl.SSLError as error:
        exchange.steps.append(_tls_failure(error, started))
        return False
    except (OSError, smtplib.SMTPException) as error:
        exchange.steps.append(_timed(Step("tls", FAILED, smtp_code=getattr(error, "smtp_code", 0),
                                          message=f"STARTTLS failed: {_describe(error, exchange)}"), started))
        return False
    exchange.steps.append(_timed(Step("tls", OK, smtp_code=code, message=f"STARTTLS ({_version(client)})"), started))
    return True


def _tls_failure(error: ssl.SSLError, started: float) -> Step:
    code = getattr(error, "verify_code", 0)
    text = getattr(error, "verify_message", "") or error.reason or type(error).__name__
    if isinstance(error, ssl.SSLCertVerificationError) and ("mismatch" in str(text).lower() or code in (62, 64)):
        hint = "the certificate is for another host name: set Host to a name the certificate covers"
    elif isinstance(error, ssl.SSLCertVerificationError):
        hint = "the certificate is not signed by a trusted CA: set the server's ca_bundle to the relay's CA bundle"
    else:
        hint = "the TLS handshake failed: check the relay's TLS settings and the port"
    message = f"certificate verification failed: {text}" if code else f"TLS failed: {text}"
    return _timed(Step("tls", FAILED, message=message, hint=hint), started)


def _auth(client: smtplib.SMTP, exchange: Exchange) -> bool:
    started = time.monotonic()
    basic = exchange.username is not None
    oauth = exchange.bearer is not None
    if not basic and not oauth:
        exchange.steps.append(Step("auth", SKIPPED, message="anonymous relay: no AUTH"))
        return True
    if not exchange.use_ssl and not exchange.allow_plaintext_auth:
        exchange.steps.append(Step(
            "auth", FAILED, message="refusing to send credentials over a connection without TLS",
            hint="set UseSSL true (STARTTLS or port 465), or allow it with the allow_plaintext_auth setting",
        ))
        return False
    try:
        client.ehlo_or_helo_if_needed()
        if basic:
            mechanism, code = _basic(client, exchange)
        else:
            mechanism, code = _xoauth2(client, exchange)
    except smtplib.SMTPAuthenticationError as error:
        exchange.steps.append(_timed(_auth_failure(error, exchange), started))
        return False
    except smtplib.SMTPNotSupportedError:
        exchange.steps.append(_timed(Step("auth", FAILED, message="the server offers no AUTH mechanism this profile can use",
                                          hint="Basic needs AUTH PLAIN or LOGIN, OAuth needs XOAUTH2"), started))
        return False
    except (OSError, smtplib.SMTPException) as error:
        exchange.steps.append(_timed(Step("auth", FAILED, smtp_code=getattr(error, "smtp_code", 0),
                                          message=f"AUTH failed: {_describe(error, exchange)}"), started))
        return False
    exchange.steps.append(_timed(Step("auth", OK, smtp_code=code, message=f"authenticated with AUTH {mechanism}"), started))
    return True


def _offered(client: smtplib.SMTP) -> set[str]:
    return set((client.esmtp_features.get("auth") or "").upper().split())


def _basic(client: smtplib.SMTP, exchange: Exchange) -> tuple[str, int]:
    offered = _offered(client)
    mechanism = "PLAIN" if "PLAIN" in offered else "LOGIN" if "LOGIN" in offered else None
    if mechanism is None:
        raise smtplib.SMTPNotSupportedError("no PLAIN or LOGIN")
    assert exchange.username is not None and exchange.password is not None
    try:
        return mechanism, _basic_auth(client, mechanism, exchange.username, exchange.password)
    except smtplib.SMTPAuthenticationError as error:
        if error.smtp_code != 535 or exchange.basic_again is None:
            raise
        # Refused credentials may have been rotated since they were cached: read them again past
        # every cache, one more try in this session. If that read fails, the 535 is the answer.
        try:
            again = exchange.basic_again()
        except Exception:  # noqa: BLE001 - the step it added says why; the relay's refusal stands
            raise error from None
        if again is None:
            raise
        username, password = again
        exchange.scrubber.smtp_login(username, password)
        return mechanism, _basic_auth(client, mechanism, username, password)


def _basic_auth(client: smtplib.SMTP, mechanism: str, username: Secret, password: Secret) -> int:
    # smtplib's auth_plain / auth_login read these; they are revealed only into the exchange.
    client.user, client.password = username.reveal(), password.reveal()
    try:
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
    finally:
        client.user = client.password = ""
    return code


def _xoauth2(client: smtplib.SMTP, exchange: Exchange) -> tuple[str, int]:
    if "XOAUTH2" not in _offered(client):
        raise smtplib.SMTPNotSupportedError("no XOAUTH2")
    assert exchange.bearer is not None
    for fresh in (False, True):
        token = exchange.bearer(fresh)
        exchange.scrubber.xoauth2(exchange.xoauth2_user, token)
        try:
            code, _ = client.auth("XOAUTH2", lambda challenge=None, t=token: _xoauth2_string(exchange.xoauth2_user, t))
            return "XOAUTH2", code
        except smtplib.SMTPAuthenticationError as error:
            if fresh or error.smtp_code != 535:
                raise
            # A refused token (expired, revoked): one fresh token, one more try in this session.
    raise AssertionError("unreachable")


def _xoauth2_string(user: str, token: Secret) -> str:
    return f"user={user}\x01auth=Bearer {token.reveal()}\x01\x01"


def _auth_failure(error: smtplib.SMTPAuthenticationError, exchange: Exchange) -> Step:
    text = _text(error.smtp_error, exchange)
    hint = next((h for code, h in _AUTH_HINTS if code in text), "")
    if not hint:
        hint = "the server rejected the credentials: check the username and password, or the token's audience and scope"
    return Step("auth", FAILED, smtp_code=error.smtp_code, message=f"the server answered {error.smtp_code} {text}", hint=hint)


def _send(client: smtplib.SMTP, exchange: Exchange) -> None:
    started = time.monotonic()
    sender, recipient = exchange.sender_account, exchange.recipient
    try:
        # What send_message does before it flattens: an SMTPUTF8 session for non-ASCII addresses.
        client.ehlo_or_helo_if_needed()
        international = not (sender + recipient).isascii()
        if international and not client.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError("a non-ASCII address needs SMTPUTF8, which the server does not offer")
        data = message_bytes(exchange.sender_name, sender, recipient, exchange.host, exchange.port,
                             international=international)
        options = ("SMTPUTF8", "BODY=8BITMIME") if international else ()
        refused = client.sendmail(sender, [recipient], data, options)
    except smtplib.SMTPSenderRefused as error:
        exchange.steps.append(_timed(Step("send", FAILED, smtp_code=error.smtp_code,
                                          message=f"MAIL FROM refused: {_text(error.smtp_error, exchange)}",
                                          hint="the relay does not let this account send as SenderAccount"), started))
        return
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        exchange.steps.append(_timed(Step("send", FAILED, smtp_code=code, message=f"recipient refused: {_text(text, exchange)}",
                                          hint="the relay refused TestRecipient"), started))
        return
    except (OSError, smtplib.SMTPException) as error:
        exchange.steps.append(_timed(Step("send", FAILED, smtp_code=getattr(error, "smtp_code", 0),
                                          message=f"sending failed: {_describe(error, exchange)}"), started))
        return
    if refused:
        code, text = next(iter(refused.values()))
        step = Step("send", FAILED, smtp_code=code, message=f"recipient refused: {_text(text, exchange)}")
        exchange.steps.append(_timed(step, started))
        return
    exchange.steps.append(_timed(Step("send", OK, smtp_code=250, message=f"test message sent to {exchange.recipient}"), started))


def _version(client: smtplib.SMTP) -> str:
    version = getattr(client.sock, "version", None)
    return version() if callable(version) else "TLS"


def _text(raw: bytes | str, exchange: Exchange) -> str:
    return exchange.scrubber.clean(raw)


def _describe(error: BaseException, exchange: Exchange) -> str:
    code = getattr(error, "smtp_code", None)
    reply = getattr(error, "smtp_error", None)
    if code is not None and reply is not None:
        return f"{code} {_text(reply, exchange)}"
    return type(error).__name__

