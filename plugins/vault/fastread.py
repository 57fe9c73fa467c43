"""Reads on the event loop: an httpx client with kept-alive connections to one Vault, for the common case only.

A read through hvac runs on a worker thread (a hop there and back) and spends about 0.4 ms of CPU
in requests, urllib3 and http.client per call, more than OpenBao takes to answer. Once a provider
holds a token that needs no login, `Reader.get` sends the same GET on the event loop instead,
through an `httpx.AsyncClient` of its own (one per event loop, its connections kept alive between
calls), and hands back the decoded JSON of a 200 answer. Anything else (another status, a refused
or broken connection, a TLS failure, an answer too large or not a JSON object) gives None, and the
provider then reads through hvac, whose answer and errors are the ones callers have always had;
only the time that path is given up on after (`TimeoutError`) is this module's.

What the hvac path guarantees holds here too: every new connection goes to an address
`check_destination` returned for the configured name (on a worker thread, as it looks the name up),
never the name again (`pinned`); the `Host` header, TLS SNI and certificate check are the
configured name's; TLS trusts `CaBundle`, else requests' default bundle, with urllib3's context; no
proxy is used (``trust_env=False``) and no redirect followed (a redirect is not a 200). httpx is
imported on the first read here, not with the provider: it adds to the idle footprint.

A client belongs to the event loop it was made on; those of a loop that has closed are dropped.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from smtpconfig.plugin import check_destination

from .parameters import Settings

if TYPE_CHECKING:
    import httpx

WHAT = "Vault Host"
#: Connections per event loop, and of those kept alive when idle (hvac's pool holds as many).
MAX_CONNECTIONS = 64
KEEP = 32
#: The largest answer read here; a larger one is left to hvac.
MAX_BODY = 4 * 1024 * 1024


class _TooLarge(Exception):
    pass


class Reader:
    """GETs against the Vault of `settings`; see the module docstring."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        parts = urlsplit(settings.host)
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        # The configured URL without user information (not sent: hvac's requests would not either).
        host = f"[{self._hostname}]" if ":" in self._hostname else self._hostname
        self._base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
        self._headers = {"X-Vault-Request": "true"}
        if settings.namespace:
            self._headers["X-Vault-Namespace"] = settings.namespace
        self._ca_bundle = settings.ca_bundle
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._modules: tuple[ModuleType, ModuleType] | None = None  # httpx, and `pinned`
        self._run: Callable[..., Any] | None = None
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, Any]] = {}
        self._closed = False
        #: Reads answered here, for tests.
        self.reads = 0
        self._opened_before = 0  # connections opened by clients dropped since

    @property
    def opened(self) -> int:
        """Connections opened so far, for tests."""
        with self._lock:
            return self._opened_before + sum(backend.opened for _, backend in self._clients.values())

    async def get(self, path: str, token: str, run: Callable[..., Any]) -> dict | None:
        """The JSON object of a 200 answer to GET `path` (under the Host's own path) with `token`,
        or None (see the module docstring). `run(function)` runs blocking work on a worker thread
        and is awaited (httpx's import and the TLS context the first time, the name lookup of each
        new connection). TimeoutError after the timeout."""
        self._run = run
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            client = await self._client(loop, run)
            if client is None:
                return None
            assert self._modules is not None
            httpx = self._modules[0]
            try:
                request = client.build_request("GET", self._base + path, headers={"X-Vault-Token": token})
                response = await client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        return None
                    body = await _bounded(response)
                finally:
                    await response.aclose()
                answer = json.loads(body)
            except httpx.TimeoutException:
                raise TimeoutError() from None
            except Exception:  # noqa: BLE001 - refused, broken, TLS, too large, not JSON: hvac says what it is
                return None
        if not isinstance(answer, dict):
            return None
        self.reads += 1
        return answer

    def close(self) -> None:
        with self._lock:
            clients, self._clients, self._closed = self._clients, {}, True
        for loop, (client, _) in clients.items():
            # A closed loop can no longer close its connections: they close as they are collected.
            if not loop.is_closed():
                try:
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                except RuntimeError:  # it closed meanwhile
                    pass

    async def _client(self, loop: asyncio.AbstractEventLoop, run: Callable[..., Any]) -> httpx.AsyncClient | None:
        """This loop's client, made on first use; None when none can be made (hvac's path says why)."""
        with self._lock:
            gone = [other for other in self._clients if other.is_closed()]
            for other in gone:
                self._opened_before += self._clients.pop(other)[1].opened
            entry = self._clients.get(loop)
        if entry is not None:
            return entry[0]
        if self._modules is None or self._context is None:
            try:
                await run(self._prepare)
            except Exception:  # noqa: BLE001 - an unreadable CaBundle: hvac's path says so
                return None
        assert self._modules is not None and self._context is not None
        httpx, pinned = self._modules
        backend = pinned.PinnedBackend(self._addresses)
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=KEEP)
        client = httpx.AsyncClient(
            transport=pinned.pinned_transport(backend, self._context, limits),
            headers=self._headers, timeout=self._timeout, trust_env=False, follow_redirects=False,
            cookies=pinned.NoCookies(),
        )
        with self._lock:
            if self._closed:
                entry = None
            else:
                entry = self._clients.setdefault(loop, (client, backend))
        if entry is None or entry[0] is not client:  # closed meanwhile, or another read made one first
            await client.aclose()
        return entry[0] if entry is not None else None

    async def _addresses(self) -> tuple[str, ...]:
        """The checked addresses of the configured name, looked up on a worker thread (`pinned`)."""
        assert self._run is not None
        return await self._run(self._check)

    def _check(self) -> tuple[str, ...]:
        return check_destination(self._hostname, self._port, what=WHAT)

    def _prepare(self) -> None:
        """On a worker thread, once: import httpx (and `pinned`), and make the TLS context."""
        import httpx

        from . import pinned

        if self._context is None:
            self._context = _tls_context(self._ca_bundle)
        self._modules = (httpx, pinned)


async def _bounded(response: httpx.Response) -> bytes:
    """The body of `response`, decoded, or _TooLarge past MAX_BODY."""
    length = response.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise _TooLarge()
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge()
        parts.append(chunk)
    return b"".join(parts)


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The context requests would verify with: urllib3's, trusting `ca_bundle` or requests' bundle.
    Made for plain-HTTP Hosts too (httpx's transport wants one); it is used only over https."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile=ca_bundle or DEFAULT_CA_BUNDLE_PATH)
    context.check_hostname = True
    return context
