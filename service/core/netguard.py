"""Where outbound connections may go: SMTP hosts, token endpoints, Vault and any provider that
declares a destination never reach link-local or cloud metadata addresses, in any spelling (SSRF
through a profile or a provider instance is how credentials of the machine would leak).

`check_destination` (async) and `check_destination_blocking` (for worker threads) resolve a host
name once and return the addresses that may be dialled, so a caller connects to exactly what was
checked (no second lookup that could answer differently: DNS rebinding).

IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are
judged by the IPv4 address too: a packet to them can end up there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from smtpconfig.core.errors import FailedPrecondition, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses that answer with the machine's own credentials or configuration on common clouds.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 §2.5.5.1, deprecated but still routed by some stacks


class RefusedDestination(FailedPrecondition):
    """The destination resolves to an address the service never connects to."""


@dataclass(frozen=True)
class Destination:
    """A host name and the checked addresses to dial, in resolver order."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def embedded(address: ipaddress.IPv6Address) -> tuple[tuple[str, ipaddress.IPv4Address], ...]:
    """The IPv4 addresses an IPv6 address carries, each with the name of the form that carries it."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        # Both ends matter: packets go to the Teredo server and to the (un-inverted) client.
        server, client = address.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in NAT64:
        found.append(("NAT64", low))
    elif address in IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are not IPv4 addresses
        found.append(("IPv4-compatible", low))
    return tuple(found)


def refusal(address: IPAddress) -> str | None:
    """Why `address` is refused, or None when it may be dialled."""
    if isinstance(address, ipaddress.IPv6Address):
        for form, inner in embedded(address):
            reason = _own_refusal(inner)
            if reason is not None:
                return f"{reason} ({inner}, {form})"
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # the same address: ::ffff:127.0.0.1 is loopback
    return _own_refusal(address)


def _own_refusal(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_loopback:
        return None  # ::1 sits in IPv6's reserved ::/8, but loopback is a fine destination
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    return None


async def check_destination(host: str, port: int, *, what: str, timeout: float) -> Destination:
    """Resolve `host` and keep the addresses that may be dialled; refuse when any answer is
    forbidden (a name pointing at a metadata address is refused whole, not filtered)."""
    address = _literal(host)
    if address is not None:
        return _checked(host, port, [address], what)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):  # not wait_for, which can swallow a cancel (3.11)
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Unavailable(f"{what} {host}: name lookup timed out after {timeout:g}s") from None
    except (socket.gaierror, UnicodeError) as error:
        raise _lookup_failed(host, what, error) from None
    return _checked(host, port, _addresses(infos), what)


def check_destination_blocking(host: str, port: int, *, what: str) -> Destination:
    """`check_destination` for code on a worker thread (providers, urllib3 connections, the SMTP
    exchange of a test). The name lookup has the system resolver's own timeout; the resolution
    engine abandons a provider call that outlives the instance's timeout, and a test whose caller
    leaves is abandoned too."""
    address = _literal(host)
    if address is not None:
        return _checked(host, port, [address], what)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise _lookup_failed(host, what, error) from None
    return _checked(host, port, _addresses(infos), what)


def numeric_refusal(host: str) -> str | None:
    """Why `host` is refused when it is an address in any numeric form the system's resolver reads
    without a lookup (``169.254.169.254``, ``0xa9fea9fe``, ``[::ffff:a9fe:a9fe]``...); None for a
    name or an allowed address. Cheap and offline: for checks when a destination is written, before
    the connect-time check of whatever a name resolves to then."""
    literal = unbracketed(host)
    try:
        infos = socket.getaddrinfo(literal, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None  # a name: checked when it is resolved to connect
    for address in _addresses(infos):
        reason = refusal(address)
        if reason is not None:
            return f"is {address}, {reason}; no connection goes there"
    return None


def unbracketed(host: str) -> str:
    """`host` without the brackets a URL puts around an IPv6 address (``[::1]`` is ``::1``)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(unbracketed(host))
    except ValueError:
        return None


def _addresses(infos: list) -> list[IPAddress]:
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def _lookup_failed(host: str, what: str, error: Exception) -> Unavailable:
    # UnicodeError: Python's IDNA codec refuses the name (an empty or over-long label).
    why = error.strerror if isinstance(error, socket.gaierror) else "not a valid host name"
    return Unavailable(f"{what} {host}: name lookup failed ({why})")


def _checked(host: str, port: int, addresses: list[IPAddress], what: str) -> Destination:
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise RefusedDestination(f"{what} {host} resolves to {address}, {reason}; refusing to connect")
    return Destination(host, port, tuple(addresses))
