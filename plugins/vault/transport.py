"""The HTTP session the Vault client talks through: every connection goes to an address the
destination guard (`smtpconfig.plugin.check_destination`) checked, and no redirect is followed.

Pinning is per connection: a urllib3 connection checks its host when it opens a socket and dials
one of the checked addresses, never the name again, so a name that answers differently on a second
lookup (DNS rebinding) cannot steer the token elsewhere. Kept-alive connections are reused without
a new check: they are already pinned. The connection keeps the name as its host, so the Host
header, TLS SNI and certificate verification are those of the configured `Host`.

A redirect is an error, not something to follow: requests would resend the ``X-Vault-Token``
header (and a login's body) to wherever the answer points. Vault itself forwards requests from
standby nodes by default; an operator whose Vault redirects points `Host` at the active node or its
load balancer instead.

Proxies from the environment are not used: a proxy would look the name up itself, out of reach of
the check.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as sockets

from smtpconfig.plugin import check_destination

WHAT = "Vault Host"


class _Pinned:
    """Opens the socket to a checked address of `host` (mixed into urllib3's connection classes)."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        last: OSError | None = None
        for address in check_destination(self.host, self.port, what=WHAT):
            try:
                return sockets.create_connection((address, self.port), self.timeout,
                                                 source_address=self.source_address,
                                                 socket_options=self.socket_options)
            except OSError as error:  # refused, unreachable, timed out: try the next address
                last = error
        if isinstance(last, TimeoutError):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out (connect timeout={self.timeout})")
        # A mixin: `self` is the HTTPConnection it is mixed into (the classes below).
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """requests' adapter, with connection pools whose connections are pinned."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def session(verify: str | bool, pool_size: int) -> requests.Session:
    """A session for one Vault client: pinned connections, no proxies, redirects refused."""
    s = requests.Session()
    s.trust_env = False
    for prefix in ("https://", "http://"):
        s.mount(prefix, PinnedAdapter(pool_connections=1, pool_maxsize=pool_size))
    # hvac takes `verify` from a given session, so set it there.
    s.verify = verify
    # A response hook runs before requests looks at redirects, whatever allow_redirects says.
    s.hooks["response"].append(_refuse_redirect)
    return s


class Redirected(Exception):
    """Vault answered with a redirect, which is not followed. Not a `ProviderError` yet: the
    message names what the server sent, so it goes through the provider's masking first."""


def _refuse_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if not response.is_redirect:
        return
    status, here, there = response.status_code, _origin(response.url), _origin(response.headers.get("location", ""))
    response.close()
    raise Redirected(
        f"Vault at {here} answered with a redirect (HTTP {status}) to {there}; not followed, since it would "
        f"carry the Vault token there: set Host to the address Vault should be reached at"
    )


def _origin(url: str) -> str:
    """scheme://host:port of a URL a server sent, or a placeholder: never its path, query or
    user information, and never more than one bounded printable line."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "an unreadable location"
    if not parts.hostname:
        return "a relative location"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    text = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)[:200]
