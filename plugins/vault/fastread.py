"""Reads on the event loop: an aiohttp session with kept-alive connections to one Vault, for the common case only.

A read through hvac runs on a worker thread (a hop there and back) and spends about 0.4 ms of CPU
in requests, urllib3 and http.client per call, more than OpenBao takes to answer. Once a provider
holds a token that needs no login, `Reader.get` sends the same GET on the event loop instead,
through an `aiohttp.ClientSession` of its own (one per event loop, its connections kept alive
between calls; aiohttp parses answers in C), and hands back the decoded JSON of a 200 answer.
Anything else (another status, a refused or broken connection, a TLS failure, an encoded answer,
one too large or not a JSON object) gives None, and the provider then reads through hvac, whose
answer and errors are the ones callers have always had; only the time that path is given up on
after (`TimeoutError`) is this module's.

What the hvac path guarantees holds here too: every new connection goes to an address
`check_destination` returned for the configured name (on a worker thread, as it looks the name
up), never the name again. aiohttp asks the connector's resolver (`_PinnedResolver`, its public
`AbstractResolver` hook; no DNS cache) for the addresses of every new connection; an address as
`Host` skips the resolver, so it is checked when the connection is about to be made (a
`TraceConfig` hook) instead. The request URL keeps the name, so the ``Host`` header, TLS SNI and
the certificate check are the configured name's; TLS trusts `CaBundle`, else requests' default
bundle, with urllib3's context; no proxy is used (``trust_env=False``), no redirect followed and
no cookie kept. aiohttp is imported on the first read here, not with the provider: it adds to the
idle footprint.

A session belongs to the event loop it was made on; those of a loop that has closed are dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from smtpconfig.plugin import check_destination

from .parameters import Settings

if TYPE_CHECKING:
    import aiohttp

WHAT = "Vault Host"
#: Connections per event loop (hvac's pool holds 32 kept alive), and how long an idle one is kept.
MAX_CONNECTIONS = 64
KEEPALIVE = 15.0
#: The largest answer read here; a larger one is left to hvac.
MAX_BODY = 4 * 1024 * 1024

Lookup = Callable[[], Awaitable[tuple[str, ...]]]


class _TooLarge(Exception):
    pass


class _Pins:
    """One session's dialling: the check of each new connection, and how many were opened."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        #: Connections opened, for tests.
        self.opened = 0


class Reader:
    """GETs against the Vault of `settings`; see the module docstring."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        parts = urlsplit(settings.host)
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            ipaddress.ip_address(self._hostname)
            self._literal = True
        except ValueError:
            self._literal = False
        # The configured URL without user information (not sent: hvac's requests would not either).
        host = f"[{self._hostname}]" if ":" in self._hostname else self._hostname
        self._base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
        # No encoding asked for: an answer is read as sent, and MAX_BODY bounds what is held.
        self._headers = {"X-Vault-Request": "true", "Accept-Encoding": "identity"}
        if settings.namespace:
            self._headers["X-Vault-Namespace"] = settings.namespace
        self._ca_bundle = settings.ca_bundle
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._aiohttp: Any = None  # the module, once imported
        self._url: Callable[[str], Any] | None = None  # the URL of a path, as sent
        self._run: Callable[..., Any] | None = None
        self._lock = threading.Lock()
        self._sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, _Pins]] = {}
        self._closed = False
        #: Reads answered here, for tests.
        self.reads = 0
        self._opened_before = 0  # connections opened by sessions dropped since

    @property
    def opened(self) -> int:
        """Connections opened so far, for tests."""
        with self._lock:
            return self._opened_before + sum(pins.opened for _, pins in self._sessions.values())

    async def get(self, path: str, token: str, run: Callable[..., Any]) -> dict | None:
        """The JSON object of a 200 answer to GET `path` (under the Host's own path) with `token`,
        or None (see the module docstring). `run(function)` runs blocking work on a worker thread
        and is awaited (aiohttp's import and the TLS context the first time, the check of each new
        connection). TimeoutError after the timeout."""
        self._run = run
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            session = await self._session(loop, run)
            if session is None:
                return None
            assert self._url is not None
            try:
                async with session.get(self._url(path), headers={"X-Vault-Token": token},
                                       allow_redirects=False) as response:
                    if response.status != 200:
                        return None
                    body = await _bounded(response)
                answer = json.loads(body)
            except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
                raise TimeoutError() from None
            except Exception:  # noqa: BLE001 - refused, broken, TLS, too large, not JSON: hvac says what it is
                return None
        if not isinstance(answer, dict):
            return None
        self.reads += 1
        return answer

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions, self._closed = self._sessions, {}, True
        for loop, (session, _) in sessions.items():
            if loop.is_closed():
                _drop(session)
                continue
            try:
                asyncio.run_coroutine_threadsafe(session.close(), loop)
            except RuntimeError:  # it closed meanwhile
                _drop(session)

    async def _session(self, loop: asyncio.AbstractEventLoop, run: Callable[..., Any]) -> aiohttp.ClientSession | None:
        """This loop's session, made on first use; None when none can be made (hvac's path says why)."""
        with self._lock:
            gone = [other for other in self._sessions if other.is_closed()]
            dropped = [self._sessions.pop(other) for other in gone]
            self._opened_before += sum(pins.opened for _, pins in dropped)
            entry = self._sessions.get(loop)
        for old, _ in dropped:
            _drop(old)
        if entry is not None:
            return entry[0]
        if self._aiohttp is None or self._context is None:
            try:
                await run(self._prepare)
            except Exception:  # noqa: BLE001 - an unreadable CaBundle: hvac's path says so
                return None
        aiohttp = self._aiohttp
        pins = _Pins(self._addresses)
        trace = aiohttp.TraceConfig()
        if self._literal:  # aiohttp dials an address without asking the resolver: check it here
            trace.on_connection_create_start.append(_checker(pins))
        trace.on_connection_create_end.append(_counter(pins))
        connector = aiohttp.TCPConnector(
            resolver=_resolver(aiohttp, pins), use_dns_cache=False, ssl=self._context,
            limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE, force_close=False,
        )
        session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, trust_env=False, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[trace],
            # No timer of aiohttp's: `get` bounds the whole read.
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
        )
        with self._lock:
            if self._closed:
                entry = None
            else:
                entry = self._sessions.setdefault(loop, (session, pins))
        if entry is None or entry[0] is not session:  # closed meanwhile, or another read made one first
            await session.close()
        return entry[0] if entry is not None else None

    async def _addresses(self) -> tuple[str, ...]:
        """The checked addresses of the configured name, looked up on a worker thread."""
        assert self._run is not None
        return await self._run(self._check)

    def _check(self) -> tuple[str, ...]:
        return check_destination(self._hostname, self._port, what=WHAT)

    def _prepare(self) -> None:
        """On a worker thread, once: import aiohttp, and make the TLS context."""
        import aiohttp
        import yarl

        if self._context is None:
            self._context = _tls_context(self._ca_bundle)
        # The paths `get` is given are quoted already (as hvac sends them): sent as they are.
        base = str(yarl.URL(self._base))
        self._url = lambda path: yarl.URL(base + path, encoded=True)
        self._aiohttp = aiohttp


def _resolver(aiohttp: Any, pins: _Pins) -> Any:
    """A resolver that answers with the checked addresses of the configured name, in order."""

    class PinnedResolver(aiohttp.abc.AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
            # Refused or unresolvable: not an OSError, so aiohttp passes it on and hvac says what it is.
            addresses = await pins.lookup()
            return [
                {"hostname": host, "host": address, "port": port, "proto": 0, "flags": 0,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET}
                for address in addresses
            ]

        async def close(self) -> None:
            return None

    return PinnedResolver()


def _checker(pins: _Pins) -> Callable[..., Awaitable[None]]:
    async def check(session: Any, context: Any, params: Any) -> None:
        await pins.lookup()  # raises when the address is refused: no connection is made

    return check


def _counter(pins: _Pins) -> Callable[..., Awaitable[None]]:
    async def count(session: Any, context: Any, params: Any) -> None:
        pins.opened += 1

    return count


def _drop(session: aiohttp.ClientSession) -> None:
    """Let go of a session whose event loop has closed, quietly: its connections can no longer be
    closed by it, and close as they are collected."""
    connector = session.connector
    session.detach()
    if connector is not None:
        # With the loop closed, this only marks the connector closed; what it returns is done at once.
        for _ in connector.close().__await__():
            break


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    """The body of `response`, or _TooLarge past MAX_BODY (or ValueError when encoded)."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise ValueError("an encoded answer")
    length = response.content_length
    if length is not None:
        if length > MAX_BODY:
            raise _TooLarge()
        return await response.read()  # no more than Content-Length
    parts: list[bytes] = []
    size = 0
    while chunk := await response.content.read(MAX_BODY + 1 - size):
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge()
        parts.append(chunk)
    return b"".join(parts)


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The context requests would verify with: urllib3's, trusting `ca_bundle` or requests' bundle.
    Made for plain-HTTP Hosts too (one connector serves both); it is used only over https."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile=ca_bundle or DEFAULT_CA_BUNDLE_PATH)
    context.check_hostname = True
    return context
