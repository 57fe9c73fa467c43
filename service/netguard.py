"""Where apply-time connections may go: SMTP hosts and token endpoints never reach link-local or
cloud metadata addresses (SSRF through a profile is how credentials of the machine would leak).

`check_destination` resolves a host name once and returns the addresses that may be dialled, so a
caller connects to exactly what was checked (no second lookup that could answer differently).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from service.errors import FailedPrecondition, Unavailable

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


class RefusedDestination(FailedPrecondition):
    """The destination resolves to an address the service never connects to."""


@dataclass(frozen=True)
class Destination:
    """A host name and the checked addresses to dial, in resolver order."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def refusal(address: IPAddress) -> str | None:
    """Why `address` is refused, or None when it may be dialled."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(literal)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which can swallow a cancel (3.11)
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except asyncio.TimeoutError:
            raise Unavailable(f"{what} {host}: name lookup timed out after {timeout:g}s") from None
        except socket.gaierror as error:
            raise Unavailable(f"{what} {host}: name lookup failed ({error.strerror})") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise RefusedDestination(f"{what} {host} resolves to {address}, {reason}; refusing to connect")
    return Destination(host, port, tuple(addresses))
