"""A real OAuth 2.0 token endpoint for tests: client-credentials grant (RFC 6749 §4.4) on 127.0.0.1.

`TokenEndpoint` is a stdlib HTTP server (``http.server.ThreadingHTTPServer``) on an ephemeral port,
served from a background thread, plain HTTP or HTTPS when the caller gives ``certfile``/``keyfile``
(PEM leaf certificate chain and key, e.g. from ``tests/kits/testca.py``). It issues short-lived random
opaque bearer tokens to registered clients and records every request it receives, so tests can
assert what a client really sent (scope, audience, custom headers, client authentication method)
and that an expired token was replaced.

Protocol behaviour, as an identity provider would do it:

* ``POST <path>`` (default ``/token``) with an ``application/x-www-form-urlencoded`` body and
  ``grant_type=client_credentials``. Other methods: 405; other paths: 404.
* Client authentication (RFC 6749 §2.3.1) by HTTP Basic (``client_secret_basic``) and/or by body
  parameters (``client_secret_post``), as ``auth_methods`` allows. Basic credentials are decoded as
  the RFC says (client id and secret form-urlencoded, then Basic) unless ``basic_decoding`` says
  ``"raw"`` (no form decoding) or ``"either"`` (accept both, as lenient providers do). Using two
  methods in one request, or a client secret in the URI, is ``invalid_request``.
* Errors are RFC 6749 §5.2 JSON: ``invalid_client`` with 401 (and ``WWW-Authenticate``) for failed
  client authentication (unknown client, wrong or revoked secret, none, method not allowed);
  ``invalid_request``, ``unsupported_grant_type``, ``invalid_scope`` with 400.
* Success is RFC 6749 §5.1 JSON with ``Cache-Control: no-store``: ``access_token``,
  ``token_type: "Bearer"``, ``expires_in`` and ``scope`` (when one was granted), no refresh token
  (§4.4.3).
* Optional policy: ``allowed_scopes`` (a requested scope outside it is ``invalid_scope``),
  ``default_scope`` (granted when none was asked for), ``required_audience`` (a string or a set of
  accepted values; a missing or other ``audience`` is ``audience_error``, ``invalid_request`` by
  default).
* Fault injection: `force_error` (any OAuth error code, any status), `force_http_status` (a 500 or
  a gateway's HTML page), `force_disconnect` (close without answering), ``delay`` (seconds before
  answering, for client timeouts); each for the next *n* token requests or until `clear_failures`.

* ``echo_credentials``: a failed client authentication answers ``invalid_client`` with an
  ``error_description`` that quotes what the client sent (the form body as it arrived, the client
  secret decoded, the ``Authorization`` header, or the Basic one the body's credentials make)
  over several lines, one shaped like a log line of the service (`ECHO_FORGED_LINE`): a careless
  or hostile identity provider.

Secrets never leave the kit: a recorded request has its ``client_secret`` field and the
``Authorization`` credentials replaced by ``[REDACTED]``, as is any registered secret that appears
in another header or field; the server writes no log lines. Issued access tokens are kept in
``issued`` (tests need them for `token_valid`), never in request records.

Usage::

    with TokenEndpoint({"client-1": "secret-1"}, expires_in=2) as idp:
        ...  # idp.url -> "http://127.0.0.1:PORT/token"
        assert idp.requests[-1].form["audience"] == "api://smtp"
        assert idp.token_valid(token)

For HTTPS: ``TokenEndpoint(clients, certfile=leaf_pem, keyfile=leaf_key)``; ``url_host`` picks the
host name in ``url`` (default ``127.0.0.1``; use ``"localhost"`` when the certificate names only
that). Down endpoint: ``stop()`` it and keep using the old ``url`` (connection refused).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REDACTED = "[REDACTED]"

CLIENT_SECRET_BASIC = "client_secret_basic"
CLIENT_SECRET_POST = "client_secret_post"
_AUTH_METHODS = (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST)
_BASIC_DECODINGS = ("rfc6749", "raw", "either")
_FORM_TYPE = "application/x-www-form-urlencoded"
#: With `echo_credentials`, a line of the error description shaped like one of the service's log lines.
ECHO_FORGED_LINE = "2026-01-01T00:00:00.000Z INFO smtpconfig.api.calls FORGED by the identity provider"


@dataclass
class RecordedRequest:
    """One HTTP request the endpoint received, secrets redacted.

    ``headers`` has lower-case names (repeated headers joined with ``", "``); ``raw_headers`` keeps
    the names as sent and their order. ``form`` is the parsed body (last value of a repeated field),
    ``query`` the parsed query string. ``auth_method`` is ``"client_secret_basic"``,
    ``"client_secret_post"``, ``"none"`` (a ``client_id`` without secret), ``"multiple"`` or
    ``None``; ``client_id`` is the id presented by that method. ``status`` and ``error`` (the OAuth
    ``error`` code, if any) describe the answer; ``outcome`` is ``"token"``, ``"error"``, ``"forced"``
    (an injected failure) or ``"disconnected"``, and all three stay ``None`` while a delayed request
    waits. Everything is set before the client can read the answer.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    form: dict[str, str]
    auth_method: str | None
    client_id: str | None
    time: float
    tls: bool
    status: int | None = None
    error: str | None = None
    outcome: str | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header's value, by case-insensitive name."""
        return self.headers.get(name.lower(), default)

    @property
    def scope(self) -> str | None:
        return self.form.get("scope")

    @property
    def audience(self) -> str | None:
        return self.form.get("audience")


@dataclass
class IssuedToken:
    """An access token the endpoint issued. ``expires_at`` is wall-clock time (``time.time()``)."""

    access_token: str
    client_id: str
    scope: str | None
    audience: str | None
    issued_at: float
    expires_at: float

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    def __repr__(self) -> str:  # the token itself is a credential: keep it out of assertion output
        return (f"IssuedToken(client_id={self.client_id!r}, scope={self.scope!r}, "
                f"audience={self.audience!r}, expires_at={self.expires_at:.3f})")


@dataclass
class _Failure:
    kind: str  # "error" | "http" | "disconnect"
    remaining: int | None  # None: until cleared
    status: int = 0
    error: str | None = None
    description: str | None = None
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str | None) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart rebinds the same port despite TIME_WAIT connections
    endpoint: TokenEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshakes a client refused, resets, a client that gave up waiting: count, do not print.
        self.endpoint._connection_errors += 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped endpoint is really down
    server_version = "oauthkit"
    sys_version = ""

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # The listening socket does not handshake on accept (a silent client would block the
            # accept loop); do it here, in this connection's thread, with a bound.
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()
        self.server.endpoint._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.endpoint._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # no log lines at all: nothing to leak

    def do_POST(self) -> None:
        self.server.endpoint._handle(self)

    def do_GET(self) -> None:
        self.server.endpoint._handle(self)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET


def _echo(description: str | None, body: bytes, form: Mapping[str, str], authorization: str | None) -> str:
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    # The header as sent, or what it would have carried for the body's credentials.
    basic = authorization or "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return "\r\n".join((
        f"{description}, secret tried: {secret}",
        ECHO_FORGED_LINE,
        f"authorization: {basic}\nthe request was: {body.decode('utf-8', 'replace')}",
    ))


class TokenEndpoint:
    """An OAuth 2.0 client-credentials token endpoint on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        clients: Mapping[str, str] | None = None,
        *,
        path: str = "/token",
        expires_in: int = 3600,
        auth_methods: Iterable[str] = _AUTH_METHODS,
        allowed_scopes: Iterable[str] | None = None,
        default_scope: str | None = None,
        required_audience: str | Iterable[str] | None = None,
        audience_error: str = "invalid_request",
        basic_decoding: str = "rfc6749",
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        url_host: str | None = None,
        include_expires_in: bool = True,
        echo_credentials: bool = False,
    ) -> None:
        methods = tuple(auth_methods)
        unknown = [m for m in methods if m not in _AUTH_METHODS]
        if unknown or not methods:
            raise ValueError(f"auth_methods must be a non-empty subset of {_AUTH_METHODS}, got {methods}")
        if basic_decoding not in _BASIC_DECODINGS:
            raise ValueError(f"basic_decoding must be one of {_BASIC_DECODINGS}")
        if (certfile is None) != (keyfile is None):
            raise ValueError("certfile and keyfile go together")
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        self.path = path
        self.expires_in = expires_in
        self.auth_methods = methods
        self.allowed_scopes = None if allowed_scopes is None else frozenset(allowed_scopes)
        self.default_scope = default_scope
        if isinstance(required_audience, str):
            required_audience = (required_audience,)
        self.required_audience = None if required_audience is None else frozenset(required_audience)
        self.audience_error = audience_error
        self.basic_decoding = basic_decoding
        self.include_expires_in = include_expires_in
        self.echo_credentials = echo_credentials
        self.host = host
        self.url_host = url_host or host
        self._certfile, self._keyfile = certfile, keyfile
        self._clients: dict[str, str] = dict(clients or {})
        self._known_secrets: set[str] = {s for s in self._clients.values() if s}
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._issued: dict[str, IssuedToken] = {}
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connection_errors = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> TokenEndpoint:
        """Listen (again). A restart after `stop()` reuses the same port, so ``url`` is unchanged."""
        if self._server is not None:
            raise RuntimeError("already started")
        server = _Server((self.host, self._port or 0), _Handler)
        server.endpoint = self
        if self._certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._certfile, self._keyfile)
            server.socket = context.wrap_socket(server.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self._port = server.server_address[1]
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"oauthkit-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections (delayed answers are abandoned). Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> TokenEndpoint:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._port is not None else "not started"
        return f"<TokenEndpoint {state} clients={sorted(self._clients)}>"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def tls(self) -> bool:
        return self._certfile is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.url_host}]" if ":" in self.url_host else self.url_host
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The full token endpoint URL. Stays the same after `stop()` (then: connection refused)."""
        return self.base_url + self.path

    # ----- clients ---------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str) -> None:
        """Register a client, or give it a new secret (rotation); un-revokes it."""
        with self._lock:
            self._clients[client_id] = secret
            if secret:
                self._known_secrets.add(secret)
            self._revoked.discard(client_id)

    def revoke(self, client_id: str) -> None:
        """Make the client's secret fail with ``invalid_client`` from now on (tokens stay valid)."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(client_id)
            self._revoked.add(client_id)

    def restore(self, client_id: str) -> None:
        with self._lock:
            self._revoked.discard(client_id)

    # ----- fault injection -------------------------------------------------------------------

    def force_error(self, error: str, description: str | None = None, *, status: int | None = None,
                    times: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer token requests with this OAuth error (status 401 for invalid_client, else 400)."""
        if status is None:
            status = 401 if error == "invalid_client" else 400
        self._add_failure(_Failure("error", times, status=status, error=error, description=description,
                                   headers=dict(headers or {})))

    def force_http_status(self, status: int = 500, body: str | bytes = "internal server error", *,
                          content_type: str = "text/plain", times: int | None = None,
                          headers: Mapping[str, str] | None = None) -> None:
        """Answer token requests with a bare HTTP status and body (a proxy's page, a crash)."""
        raw = body.encode() if isinstance(body, str) else body
        self._add_failure(_Failure("http", times, status=status, body=raw, content_type=content_type,
                                   headers=dict(headers or {})))

    def force_disconnect(self, *, times: int | None = None) -> None:
        """Close the connection without answering."""
        self._add_failure(_Failure("disconnect", times))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
        self._delay = 0.0

    @property
    def delay(self) -> float:
        """Seconds every request waits before it is answered (cut short by `stop()`)."""
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._delay = max(0.0, float(seconds))

    def _add_failure(self, failure: _Failure) -> None:
        if failure.remaining is not None and failure.remaining < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._failures.append(failure)

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.pop(0)
            return failure

    # ----- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first (a copy of the list; records are live objects)."""
        with self._lock:
            return list(self._requests)

    @property
    def token_requests(self) -> list[RecordedRequest]:
        """Requests to the token path."""
        return [r for r in self.requests if r.path == self.path]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests are recorded *and answered*; return them."""
        deadline = time.monotonic() + timeout
        while True:
            done = [r for r in self.requests if r.outcome is not None]
            if len(done) >= count or time.monotonic() >= deadline:
                return done
            time.sleep(0.01)

    @property
    def issued(self) -> list[IssuedToken]:
        """Tokens issued, oldest first."""
        with self._lock:
            return sorted(self._issued.values(), key=lambda t: t.issued_at)

    def token_info(self, token: str) -> IssuedToken | None:
        with self._lock:
            return self._issued.get(token)

    def token_valid(self, token: str, *, scope: str | None = None, audience: str | None = None) -> bool:
        """True if this endpoint issued ``token``, it has not expired, and (when given) it was
        granted every scope in ``scope`` and issued for ``audience``. For an XOAUTH2 check."""
        info = self.token_info(token)
        if info is None or info.expired:
            return False
        if scope is not None and not set(scope.split()) <= set((info.scope or "").split()):
            return False
        if audience is not None and info.audience != audience:
            return False
        return True

    def expire_all(self) -> None:
        """Make every token issued so far invalid, as if its lifetime had passed."""
        now = time.time()
        with self._lock:
            for info in self._issued.values():
                info.expires_at = min(info.expires_at, now)

    @property
    def connection_errors(self) -> int:
        """Connections that failed below HTTP (TLS handshake refused by the client, resets)."""
        return self._connection_errors

    # ----- request handling ------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _redact(self, value: str, extra: Iterable[str] = ()) -> str:
        with self._lock:
            known = set(self._known_secrets)
        for secret in sorted(known | {s for s in extra if s}, key=len, reverse=True):
            if len(secret) >= 4 and secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def _handle(self, h: _Handler) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        body = h.rfile.read(length) if length > 0 else b""
        url = urllib.parse.urlsplit(h.path)
        raw_query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        is_form = (h.headers.get_content_type() == _FORM_TYPE)
        try:
            raw_form = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                              strict_parsing=False) if is_form else []
            body_ok = True
        except UnicodeDecodeError:
            raw_form, body_ok = [], False
        form = dict(raw_form)
        basic = self._parse_basic(h.headers.get("Authorization"))

        # Which client authentication the request presents (RFC 6749 §2.3).
        presented: list[str] = []
        if basic is not None:
            presented.append(CLIENT_SECRET_BASIC)
        if "client_secret" in form:
            presented.append(CLIENT_SECRET_POST)
        if len(presented) > 1:
            auth_method = "multiple"
        elif presented:
            auth_method = presented[0]
        elif "client_id" in form:
            auth_method = "none"
        else:
            auth_method = None
        if auth_method == CLIENT_SECRET_BASIC:
            client_id = basic[0][0] if basic else None
        else:
            client_id = form.get("client_id") or (basic[0][0] if basic else None)

        attempted = [form.get("client_secret", ""), dict(raw_query).get("client_secret", "")]
        if basic is not None:
            attempted += [c[1] for c in basic]
        record = RecordedRequest(
            method=h.command,
            path=url.path,
            query={k: (REDACTED if k == "client_secret" else self._redact(v, attempted))
                   for k, v in raw_query},
            headers={},
            raw_headers=[],
            form={k: (REDACTED if k == "client_secret" else self._redact(v, attempted))
                  for k, v in form.items()},
            auth_method=auth_method,
            client_id=client_id,
            time=time.time(),
            tls=isinstance(h.connection, ssl.SSLSocket),
        )
        for name, value in h.headers.items():
            if name.lower() in ("authorization", "proxy-authorization"):
                scheme = value.split(" ", 1)[0]
                value = f"{scheme} {REDACTED}" if " " in value else REDACTED
            else:
                value = self._redact(value, attempted)
            record.raw_headers.append((name, value))
            key = name.lower()
            record.headers[key] = f"{record.headers[key]}, {value}" if key in record.headers else value
        with self._lock:
            self._requests.append(record)

        if self._delay and self._stopping.wait(self._delay):
            record.outcome = "disconnected"
            return  # stopped while waiting: the connection is cut

        if url.path != self.path:
            self._send_json(h, record, 404, {"error": "not_found"}, error=None)
            return
        if h.command != "POST":
            self._send_json(h, record, 405, {"error": "invalid_request",
                                             "error_description": "the token endpoint takes POST"},
                            headers={"Allow": "POST"})
            return

        failure = self._take_failure()
        if failure is not None:
            self._send_failure(h, record, failure)
            return

        try:
            if not is_form:
                raise _OAuthError(400, "invalid_request", f"Content-Type must be {_FORM_TYPE}")
            if not body_ok:
                raise _OAuthError(400, "invalid_request", "the body is not UTF-8")
            repeated = sorted({k for k, _ in raw_form if sum(1 for k2, _ in raw_form if k2 == k) > 1})
            if repeated:
                raise _OAuthError(400, "invalid_request", f"repeated parameters: {', '.join(repeated)}")
            if length < 0:
                raise _OAuthError(400, "invalid_request", "bad Content-Length")
            if any(k == "client_secret" for k, _ in raw_query):
                raise _OAuthError(400, "invalid_request", "client credentials must not be in the URI")
            client = self._authenticate(auth_method, basic, form)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise _OAuthError(400, "invalid_request", "missing grant_type")
            if grant_type != "client_credentials":
                raise _OAuthError(400, "unsupported_grant_type", "only client_credentials is supported")
            scope = self._grant_scope(form.get("scope"))
            audience = form.get("audience") or None
            if self.required_audience is not None and audience not in self.required_audience:
                raise _OAuthError(400, self.audience_error,
                                  "missing audience" if audience is None else "audience not accepted")
        except _OAuthError as e:
            payload = {"error": e.error}
            if e.description:
                payload["error_description"] = e.description
            if self.echo_credentials and e.error == "invalid_client":
                payload["error_description"] = _echo(e.description, body, form, h.headers.get("Authorization"))
            headers = {}
            if e.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="oauthkit", error="invalid_client"'
            self._send_json(h, record, e.status, payload, headers=headers)
            return

        token = secrets.token_urlsafe(32)
        now = time.time()
        expires_in = int(self.expires_in)
        with self._lock:
            self._issued[token] = IssuedToken(token, client, scope, audience, now, now + expires_in)
        payload: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.include_expires_in:
            payload["expires_in"] = expires_in
        if scope:
            payload["scope"] = scope
        self._send_json(h, record, 200, payload)

    def _parse_basic(self, header: str | None) -> list[tuple[str, str]] | None:
        """Candidate (client_id, secret) pairs from a Basic header; ``[]`` if malformed."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return []
        if ":" not in decoded:
            return []
        user, _, password = decoded.partition(":")
        candidates = []
        if self.basic_decoding in ("rfc6749", "either"):
            candidates.append((urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)))
        if self.basic_decoding in ("raw", "either"):
            candidates.append((user, password))
        return candidates

    def _authenticate(self, method: str | None, basic: list[tuple[str, str]] | None,
                      form: dict[str, str]) -> str:
        if method == "multiple":
            raise _OAuthError(400, "invalid_request", "more than one client authentication method")
        if method in (None, "none"):
            raise _OAuthError(401, "invalid_client", "client authentication required")
        if method not in self.auth_methods:
            raise _OAuthError(401, "invalid_client", f"{method} is not allowed for this client")
        if method == CLIENT_SECRET_BASIC:
            if "client_id" in form and basic and form["client_id"] not in {c[0] for c in basic}:
                raise _OAuthError(400, "invalid_request", "client_id in body differs from Basic")
            candidates = basic or []
        else:
            candidates = [(form.get("client_id", ""), form.get("client_secret", ""))]
        with self._lock:
            for client_id, secret in candidates:
                expected = self._clients.get(client_id)
                if (expected is not None and client_id not in self._revoked
                        and secrets.compare_digest(expected.encode(), secret.encode())):
                    return client_id
        raise _OAuthError(401, "invalid_client", "client authentication failed")

    def _grant_scope(self, requested: str | None) -> str | None:
        if requested is None or not requested.strip():
            return self.default_scope
        tokens = requested.split(" ")
        if any(not t or any(c in t for c in '"\\') or not all(0x21 <= ord(c) <= 0x7E for c in t)
               for t in tokens):
            raise _OAuthError(400, "invalid_scope", "malformed scope")
        if self.allowed_scopes is not None:
            bad = [t for t in tokens if t not in self.allowed_scopes]
            if bad:
                raise _OAuthError(400, "invalid_scope", f"scope not allowed: {' '.join(bad)}")
        return " ".join(dict.fromkeys(tokens))

    def _send_failure(self, h: _Handler, record: RecordedRequest, failure: _Failure) -> None:
        if failure.kind == "disconnect":
            record.outcome = "disconnected"
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if failure.kind == "error":
            payload = {"error": failure.error}
            if failure.description:
                payload["error_description"] = failure.description
            self._send_json(h, record, failure.status, payload, headers=failure.headers, outcome="forced")
            return
        record.status, record.outcome = failure.status, "forced"
        self._send(h, failure.status, failure.body, failure.content_type, failure.headers)

    def _send_json(self, h: _Handler, record: RecordedRequest, status: int, payload: dict[str, Any],
                   *, headers: Mapping[str, str] | None = None, error: str | None | bool = True,
                   outcome: str | None = None) -> None:
        # The record is complete before the client can read the answer.
        record.status = status
        record.error = payload.get("error") if error is True else error
        record.outcome = outcome or ("token" if status == 200 else "error")
        extra = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
        self._send(h, status, json.dumps(payload).encode(), "application/json", extra)

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
        except OSError:
            pass  # the client went away (timed out): nothing to answer
