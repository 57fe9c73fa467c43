"""Reads on the event loop: kept-alive HTTP/1.1 connections to one Vault, for the common case only.

A read through hvac runs on a worker thread (a hop there and back) and spends about 0.4 ms of CPU
in requests, urllib3 and http.client per call, more than OpenBao takes to answer. Once a provider
holds a token that needs no login, `Reader.get` sends the same GET on the event loop instead, over
a connection of its own kept alive between calls, and hands back the decoded JSON of a 200 answer.
Anything else (another status, a refused or broken connection, a TLS failure, an answer it does not
parse) gives None, and the provider then reads through hvac, whose answer and errors are the ones
callers have always had; only the time that path is given up on after (`TimeoutError`) is this
module's.

What the hvac path guarantees holds here too: every new connection goes to an address
`check_destination` returned for the configured name (on a worker thread, as it looks the name up),
never the name again; the `Host` header, TLS SNI and certificate check are the configured name's;
TLS trusts `CaBundle`, else requests' default bundle, with urllib3's context; no proxy is used and
no redirect followed (a redirect is not a 200). Connections belong to the event loop that opened
them; those of a loop that has closed are dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from smtpconfig.plugin import check_destination

from .parameters import Settings

WHAT = "Vault Host"
#: Idle connections kept per event loop.
KEEP = 32
#: The largest answer read here; a larger one is left to hvac.
MAX_BODY = 4 * 1024 * 1024


class _Connection:
    def __init__(self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send `request`; (status, body, whether the connection may be used again)."""
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status = head[0].split(" ", 2)[:2]
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_BODY:
                raise ValueError("answer too large")
            body = await self.reader.readexactly(length)
        else:
            raise ValueError("answer without a length")
        return int(status), body, keep

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            length = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if length == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            size += length
            if size > MAX_BODY:
                raise ValueError("answer too large")
            parts.append(await self.reader.readexactly(length))
            await self.reader.readexactly(2)

    def discard(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.is_closed():
            self.sock.close()  # its transport can no longer close it
        else:
            loop.call_soon_threadsafe(self.writer.close)


class Reader:
    """GETs against the Vault of `settings`; see the module docstring."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        parts = urlsplit(settings.host)
        self._tls = parts.scheme == "https"
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._host_header = parts.netloc.rpartition("@")[2]
        self._extra = f"X-Vault-Namespace: {settings.namespace}\r\n" if settings.namespace else ""
        self._ca_bundle = settings.ca_bundle
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[asyncio.AbstractEventLoop, list[_Connection]] = {}
        self._closed = False
        #: Reads answered here, and connections opened, for tests.
        self.reads = 0
        self.opened = 0

    async def get(self, path: str, token: str, run: Callable[..., Any]) -> dict | None:
        """The JSON object of a 200 answer to GET `path` (under the Host's own path) with `token`,
        or None (see the module docstring). `run(function)` runs blocking work on a worker thread
        and is awaited (the name lookup of a new connection). TimeoutError after the timeout."""
        request = (
            f"GET {self._prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\nAccept: */*\r\n"
            f"X-Vault-Request: true\r\nX-Vault-Token: {token}\r\n{self._extra}\r\n"
        ).encode("latin-1")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            for _ in range(2):
                connection = self._take(loop)
                reused = connection is not None
                if connection is None:
                    connection = await self._open(loop, run)
                    if connection is None:
                        return None
                try:
                    status, body, keep = await connection.exchange(request)
                except Exception:  # noqa: BLE001 - broken or unreadable: hvac says what it is
                    connection.discard(loop)
                    if reused:
                        continue  # a kept-alive connection the server had closed: once more, on a new one
                    return None
                except BaseException:  # cancelled or out of time mid-answer: the connection is unusable
                    connection.discard(loop)
                    raise
                if keep:
                    self._give(loop, connection)
                else:
                    connection.discard(loop)
                if status != 200:
                    return None
                try:
                    answer = json.loads(body)
                except ValueError:
                    return None
                if not isinstance(answer, dict):
                    return None
                self.reads += 1
                return answer
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, {}, True
        for loop, connections in idle.items():
            for connection in connections:
                connection.discard(loop)

    def _take(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        with self._lock:
            gone = [other for other in self._idle if other.is_closed()]
            dropped = [c for other in gone for c in self._idle.pop(other)]
            idle = self._idle.get(loop)
            connection = idle.pop() if idle else None
        for old in dropped:
            old.sock.close()
        return connection

    def _give(self, loop: asyncio.AbstractEventLoop, connection: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(loop, [])
            if not self._closed and len(idle) < KEEP:
                idle.append(connection)
                return
        connection.discard(loop)

    async def _open(self, loop: asyncio.AbstractEventLoop, run: Callable[..., Any]) -> _Connection | None:
        """A new connection to a checked address, or None when none could be made."""
        try:
            addresses = await run(self._prepare)
        except Exception:  # noqa: BLE001 - refused or unresolvable: hvac's path says so
            return None
        for address in addresses:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, (address, self._port))
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=self._context if self._tls else None,
                    server_hostname=self._hostname if self._tls else None,
                )
            except Exception:  # noqa: BLE001 - refused, unreachable, TLS: the next address, then hvac
                sock.close()
                continue
            except BaseException:
                sock.close()
                raise
            self.opened += 1
            return _Connection(sock, reader, writer)
        return None

    def _prepare(self) -> tuple[str, ...]:
        """On a worker thread: the checked addresses, and the TLS context once."""
        addresses = check_destination(self._hostname, self._port, what=WHAT)
        if self._tls and self._context is None:
            self._context = _tls_context(self._ca_bundle)
        return addresses


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The context requests would verify with: urllib3's, trusting `ca_bundle` or requests' bundle."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile=ca_bundle or DEFAULT_CA_BUNDLE_PATH)
    context.check_hostname = True
    return context
