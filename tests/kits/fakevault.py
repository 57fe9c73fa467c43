"""A stand-in for Vault's HTTP API, for what a real OpenBao cannot be made to do: answer with a
redirect, serve TLS with a certificate for a name only, or echo a credential in an error. It serves
KV v2 reads and AppRole and JWT logins on one address, records each request (path, Host header,
whether a Vault token came with it, the TLS server name the client asked for) and never logs. Real OpenBao covers everything else
(tests/kits/openbao.py).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    host: str | None
    token: str | None
    body: bytes
    server_name: str | None


class FakeVault:
    """Serves `secrets` ({"path": {"key": "value"}}) at KV v2 mount ``secret``, and logins that
    return `login_token`; with `redirect_to`, answers every request (with `logins_too` False, every
    one but a login) with a 307 to that URL prefix instead, ``{token}`` in it replaced by the
    request's Vault token. `echo` ``"token"`` refuses every read (403) with an error quoting the request's Vault
    token; ``"jwt"`` refuses every JWT login (400) quoting its JWT: as sent, upper-cased, base64."""

    def __init__(self, secrets: dict[str, dict[str, str]] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, redirect_to: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None, login_token: str = "fake-login-token",
                 echo: str | None = None, logins_too: bool = True) -> None:
        self.secrets = secrets or {}
        self.redirect_to = redirect_to
        self.login_token = login_token
        self.echo = echo
        self.logins_too = logins_too
        self.seen: list[Seen] = []
        self._names: dict[int, str | None] = {}
        kit = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def do_GET(self) -> None:
                kit._handle(self)

            do_POST = do_PUT = do_GET

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        if certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            context.sni_callback = self._sni
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakevault-{self.port}", daemon=True)

    def __enter__(self) -> FakeVault:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self._names[id(sock)] = name

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        name = self._names.get(id(h.connection)) if isinstance(h.connection, ssl.SSLSocket) else None
        self.seen.append(Seen(h.command, h.path, h.headers.get("Host"), h.headers.get("X-Vault-Token"), body, name))
        login = h.path.startswith("/v1/auth/")
        if self.redirect_to is not None and (self.logins_too or not login):
            there = self.redirect_to.replace("{token}", h.headers.get("X-Vault-Token", ""))
            self._send(h, 307, {}, {"Location": there + h.path})
        elif self.echo == "jwt" and h.path.startswith("/v1/auth/jwt/login"):
            self._send(h, 400, {"errors": [_echoed("invalid jwt", json.loads(body).get("jwt", ""))]})
        elif h.path.startswith(("/v1/auth/approle/login", "/v1/auth/jwt/login")):
            self._send(h, 200, {"auth": {"client_token": self.login_token, "lease_duration": 3600}})
        elif self.echo == "token" and h.path.startswith("/v1/secret/data/"):
            self._send(h, 403, {"errors": [_echoed("permission denied for token", h.headers.get("X-Vault-Token", ""))]})
        elif h.path.startswith("/v1/secret/data/"):
            data = self.secrets.get(h.path.removeprefix("/v1/secret/data/").split("?")[0])
            if data is None:
                self._send(h, 404, {"errors": []})
            else:
                self._send(h, 200, {"data": {"data": data, "metadata": {"version": 1}}})
        else:
            self._send(h, 404, {"errors": []})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)


def _echoed(what: str, credential: str) -> str:
    encoded = base64.b64encode(credential.encode()).decode()
    return f"{what} {credential} (as {credential.upper()}, as {encoded})"
