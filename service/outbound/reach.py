"""Where a test may send credentials: `smtp:test` never reveals more than `smtp:resolve` would.

A test sends the relay credentials to `Host`:`Port` and, for OAuth, the client id and secret to
`TokenEndpoint`, whose access token then goes to the relay. Whoever picks those destinations reads
what arrives there. The candidate profile of a TestSmtp is built from the request alone, so a
credential it carries is either a value the caller typed (an inline secret: the caller's own, free
to go anywhere) or one the caller only named: a provider reference, which anyone holding
`smtp:read` can copy from the stored profile, or whatever a later API adds that stands for stored
data. Such a credential may go only to the stored profile's own destinations, unless the caller
also holds `smtp:resolve`, which hands out working credentials anyway.

The rule looks at every credential field the candidate's type uses, so one reference next to an
inline value is enough to bind the test to the stored destinations, and it is applied before
anything is resolved or dialled.
"""

from __future__ import annotations

import ipaddress

from smtpconfig.core import endpoint
from smtpconfig.core.errors import PermissionDenied
from smtpconfig.core.netguard import unbracketed
from smtpconfig.domain.model import (
    CREDENTIALS_FOR,
    FIELDS,
    SENT_TO,
    AuthType,
    InlineSecret,
    Profile,
    ProviderRef,
)

RESOLVE = "smtp:resolve"

# Keyfactor names of the destinations each kind of credential reaches (`SENT_TO`). OAuth needs
# the relay's too: the access token obtained with the client credentials is sent there, and an
# access token is exactly what smtp:resolve reveals.
_DESTINATIONS = {
    kind: tuple(FIELDS[d] for d in dict.fromkeys(
        [*(d for credential in CREDENTIALS_FOR[kind] for d in SENT_TO[credential]), *SENT_TO["relay_password"]]
    ))
    for kind in (AuthType.BASIC, AuthType.OAUTH_CLIENT_CREDENTIALS)
}

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def named_credentials(profile: Profile) -> dict[str, str]:
    """The credential fields the profile's type uses whose value the caller did not type, by
    Keyfactor name, with where each comes from ("provider 3")."""
    found = {}
    for name in CREDENTIALS_FOR[profile.relay_authentication_type]:
        source = getattr(profile, name)
        if isinstance(source, ProviderRef):
            found[FIELDS[name]] = f"provider {source.provider}"
        elif not isinstance(source, InlineSecret):
            found[FIELDS[name]] = "the stored profile"  # anything but a typed value counts as named
    return found


def check_test_reach(candidate: Profile, stored: Profile | None, holds_resolve: bool) -> None:
    """Refuse (PermissionDenied) a test of `candidate` that would send a credential the caller
    did not type to a destination that is not the stored profile's. Never names a value."""
    if holds_resolve:
        return
    named = named_credentials(candidate)
    if not named:
        return
    if stored is None:
        differing = list(_DESTINATIONS[candidate.relay_authentication_type])
        why = "no profile is stored, so there is no destination they may go to"
    else:
        differing = _differing(candidate, stored)
        if not differing:
            return
        why = f"{_and(differing)} {'differs' if len(differing) == 1 else 'differ'} from the stored profile"
    which = [f"{field} (from {origin})" for field, origin in named.items()]
    raise PermissionDenied(
        f"{_and(which)} may be sent only to the stored profile's destinations"
        f" ({_and(list(_DESTINATIONS[candidate.relay_authentication_type]))}), and {why}."
        f" Type the credentials into the test profile, test with the stored destinations, or hold"
        f" {RESOLVE}, which lifts this rule."
    )


def _differing(candidate: Profile, stored: Profile) -> list[str]:
    same = {
        "Host": lambda: same_host(candidate.host, stored.host),
        "Port": lambda: candidate.port == stored.port,
        "UseSSL": lambda: candidate.use_ssl or not stored.use_ssl,
        "TokenEndpoint": lambda: bool(stored.token_endpoint)
        and same_endpoint(candidate.token_endpoint, stored.token_endpoint),
    }
    return [field for field in _DESTINATIONS[candidate.relay_authentication_type] if not same[field]()]


def same_host(a: str, b: str) -> bool:
    """Whether two `Host` values surely name one destination. Names compare without regard to
    ASCII case, as DNS does; IP literals compare as addresses (`[::1]` is `0:0::1`). A trailing
    dot is not ignored: a resolver may complete `mail` from its search list but never `mail.`, so
    the two can reach different hosts. Refusing an equivalent spelling costs the caller nothing:
    it can write the stored one."""
    address_a, address_b = _address(a), _address(b)
    if address_a is not None or address_b is not None:
        return address_a == address_b
    return a.translate(_ASCII_LOWER) == b.translate(_ASCII_LOWER)


def same_endpoint(a: str, b: str) -> bool:
    """Whether two token endpoint URLs are the same destination: equal but for the ASCII case of
    scheme and authority. Path and query must match exactly, since on multi-tenant identity
    providers they pick the tenant; an explicit default port, a trailing dot or another spelling of
    an address counts as different. Comparing text, not parsed parts, leaves no room for two URL
    parsers to disagree about where a URL goes."""
    return _fold_authority(a) == _fold_authority(b)


def _fold_authority(url: str) -> str:
    start = url.find("://")
    if start < 0:
        return url
    start += 3
    end = next((i for i in range(start, len(url)) if url[i] in "/?#\\"), len(url))
    return url[:end].translate(_ASCII_LOWER) + url[end:]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(unbracketed(host))
    except ValueError:
        return None


def destinations(profile: Profile) -> str:
    """Where a test of `profile` sends things, for the audit record: relay host:port and the
    token endpoint's host:port (never its user information, path or query)."""
    where = f"relay {_authority(profile.host, profile.port)}"
    if profile.relay_authentication_type is AuthType.OAUTH_CLIENT_CREDENTIALS:
        where += f", token endpoint {_token_endpoint(profile.token_endpoint)}"
    return where


def _token_endpoint(url: str) -> str:
    # Read as the token client reads it, so the record names the host and port it dials.
    try:
        parts = endpoint.parse(url)
    except endpoint.BadEndpoint:
        return "(not a readable URL)"
    return _authority(parts.host, parts.port)


def _authority(host: str, port: int | None) -> str:
    host = unbracketed(host)
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
