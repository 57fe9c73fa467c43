"""The httpx client `fastread` sends its reads through; imported on the first read on the event loop.

Pinning is per connection, as in `transport` (hvac's side): the connection pool asks
`PinnedBackend.connect_tcp` for every new connection, and that looks the configured name up with
`check_destination` (awaiting `lookup`, which runs it on a worker thread) and dials one of the
checked addresses, never the name. The request URL keeps the name, so the ``Host`` header, TLS SNI
and the certificate check are the configured `Host`'s; kept-alive connections are reused without a
new check, being pinned already.

httpx's transport takes no network backend, so `pinned_transport` gives the one it builds a
connection pool of its own (`_pool`, which every httpx 0.2x transport sends through) that has one.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable
from http.cookiejar import CookieJar
from typing import Any

import httpcore
import httpx

Lookup = Callable[[], Awaitable[tuple[str, ...]]]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Dials the addresses `lookup` returns, in order, instead of the host the pool names."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._inner = httpcore.AnyIOBackend()
        #: Connections opened, for tests.
        self.opened = 0

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._lookup()
        except Exception as error:  # refused or unresolvable: the read falls back to hvac, which says so
            raise httpcore.ConnectError(f"{type(error).__name__}") from None
        failure: Exception = httpcore.ConnectError("no address to dial")
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:  # the next address may answer
                failure = error
                continue
            self.opened += 1
            return stream
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a Vault Host is dialled over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class NoCookies(CookieJar):
    """A cookie jar that keeps nothing: a read sends no cookie, and no answer's is parsed (httpx
    otherwise reads every answer's headers through http.cookiejar, a sizeable part of a read's CPU)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Any) -> None:
        return None


def pinned_transport(backend: PinnedBackend, context: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose new connections go through `backend`, TLS verified with `context`."""
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False, limits=limits)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        # Never send through a pool that dials the name itself: fail loudly on an httpx that changed.
        raise RuntimeError("httpx.AsyncHTTPTransport has no connection pool at _pool")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
