"""Apply-time destinations: link-local and cloud metadata addresses are refused, by literal or by
name, and the addresses that were checked are the ones handed back for dialling."""

from __future__ import annotations

import asyncio

import pytest

from service.netguard import RefusedDestination, check_destination


def check(host: str, port: int = 587):
    return asyncio.run(check_destination(host, port, what="SMTP host", timeout=5))


REFUSED = [
    ("AWS/GCP/Azure metadata", "169.254.169.254", "metadata"),
    ("ECS task credentials", "169.254.170.2", "metadata"),
    ("AWS IMDS over IPv6", "fd00:ec2::254", "metadata"),
    ("bracketed IPv6 metadata", "[fd00:ec2::254]", "metadata"),
    ("Alibaba metadata", "100.100.100.200", "metadata"),
    ("Azure WireServer", "168.63.129.16", "metadata"),
    ("IPv4 link-local", "169.254.10.1", "link-local"),
    ("IPv6 link-local", "fe80::1", "link-local"),
    ("metadata behind an IPv4-mapped IPv6 address", "::ffff:169.254.169.254", "metadata"),
    ("unspecified", "0.0.0.0", "unicast"),
    ("multicast", "224.0.0.1", "unicast"),
]


@pytest.mark.parametrize("reason,host,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(reason: str, host: str, says: str) -> None:
    with pytest.raises(RefusedDestination, match=says):
        check(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "192.0.2.10", "10.1.2.3"])
def test_allowed(host: str) -> None:
    destination = check(host)
    assert destination.addresses and destination.port == 587


def test_names_are_resolved_once_and_the_checked_addresses_returned() -> None:
    destination = check("localhost", 25)
    assert {str(a) for a in destination.addresses} <= {"127.0.0.1", "::1"}
