"""Token endpoint URLs, read by the parser the token client sends with: httpx's.

Write-time validation (`smtpconfig.domain.validation`) and the token client (`smtpconfig.outbound.oauth`) both take the
scheme, host and port from `parse`, so no second parser can find another host in the same string
(``https://a\\@b/``, percent-encoded or IDNA hosts, odd ports): the host that was accepted is the
host that is checked, and the address checked is the one dialled.

httpx is imported on first use, not at start (tests/test_footprint.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# httpx's own split of the authority (RFC 3986 §3.2): everything up to the first / ? or #.
_AUTHORITY = re.compile(r"[^:/?#]*://([^/?#]*)")
DEFAULT_PORTS = {"https": 443, "http": 80}


class BadEndpoint(ValueError):
    """httpx cannot read the URL."""


@dataclass(frozen=True)
class Endpoint:
    """A token endpoint URL as httpx reads it."""

    #: Lower case, as httpx sends it.
    scheme: str
    #: What is looked up and what TLS checks: an IDNA-encoded (ASCII) name or an IP address
    #: without brackets; empty when the URL has no host.
    host: str
    #: The port dialled: the URL's, or the scheme's default (None for another scheme).
    port: int | None
    #: The URL's own port, None when it gives none.
    given_port: int | None
    #: True when the authority has user information, even an empty one (``https://@host``).
    userinfo: bool
    #: True when the URL has a fragment, even an empty one.
    fragment: bool


def parse(url: str) -> Endpoint:
    """Read `url` as the token client will; `BadEndpoint` when httpx cannot."""
    import httpx

    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        given = parsed.port
    except (httpx.InvalidURL, ValueError):  # ValueError: IDNA errors are UnicodeErrors
        raise BadEndpoint(url) from None
    authority = _AUTHORITY.match(url)
    return Endpoint(
        scheme=parsed.scheme,
        host=host,
        port=given if given is not None else DEFAULT_PORTS.get(parsed.scheme),
        given_port=given,
        userinfo=bool(parsed.userinfo) or (authority is not None and "@" in authority.group(1)),
        fragment="#" in url,
    )
