"""A stand-in for Vault's HTTP API, for what a real OpenBao cannot be made to do: answer with a
redirect, or serve TLS with a certificate for a name only. It serves KV v2 reads and AppRole logins
on one address, records each request (path, Host header, whether a Vault token came with it, the
TLS server name the client asked for) and never logs. Real OpenBao covers everything else
(tests/openbao.py).
"""

from __future__ import annotations

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
    """Serves `secrets` ({"path": {"key": "value"}}) at KV v2 mount ``secret``; with `redirect_to`,
    answers every request with a 307 to that URL prefix instead."""

    def __init__(self, secrets: dict[str, dict[str, str]] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, redirect_to: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None) -> None:
        self.secrets = secrets or {}
        self.redirect_to = redirect_to
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

    def __enter__(self) -> "FakeVault":
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
        if self.redirect_to is not None:
            self._send(h, 307, {}, {"Location": self.redirect_to + h.path})
        elif h.path.startswith("/v1/auth/approle/login"):
            self._send(h, 200, {"auth": {"client_token": "fake-login-token", "lease_duration": 3600}})
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
