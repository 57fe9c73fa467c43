"""Apply-time destinations: link-local and cloud metadata addresses are refused, by literal or by
name, and the addresses that were checked are the ones handed back for dialling."""

from __future__ import annotations

import asyncio

import pytest

from smtpconfig.core.netguard import RefusedDestination, check_destination, check_destination_blocking


def check(host: str, port: int = 587):
    return asyncio.run(check_destination(host, port, what="SMTP host", timeout=5))


def check_blocking(host: str, port: int = 587):
    return check_destination_blocking(host, port, what="SMTP host")


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
    ("6to4 carrying the metadata address (bits 16..48)", "2002:a9fe:a9fe::1", "metadata.*6to4"),
    ("6to4 carrying a link-local address", "2002:a9fe:0a01:1::5", "link-local.*6to4"),
    ("6to4 carrying the ECS credentials address", "[2002:a9fe:aa02::]", "metadata.*6to4"),
    ("Teredo with the metadata address as server", "2001:0:a9fe:a9fe:0:ffff:3fff:fdfe", "metadata.*Teredo server"),
    ("Teredo with the metadata address as (inverted) client", "2001:0:c000:201:0:ffff:5601:5601",
     "metadata.*Teredo client"),
    ("NAT64 well-known prefix carrying the metadata address", "64:ff9b::a9fe:a9fe", "metadata.*NAT64"),
    ("IPv4-compatible metadata address", "::169.254.169.254", "metadata.*IPv4-compatible"),
    ("IPv4-mapped link-local", "::ffff:169.254.1.1", "link-local"),
]


@pytest.mark.parametrize("front", [check, check_blocking], ids=["async", "blocking"])
@pytest.mark.parametrize("reason,host,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(front, reason: str, host: str, says: str) -> None:
    with pytest.raises(RefusedDestination, match=says):
        front(host)


ALLOWED = [
    ("IPv4 loopback", "127.0.0.1"),
    ("IPv6 loopback", "::1"),
    ("bracketed IPv6 loopback", "[::1]"),
    ("a name for loopback", "localhost"),
    ("documentation address (stands for any public one)", "192.0.2.10"),
    ("private network: relays often live there", "10.1.2.3"),
    ("IPv4-mapped loopback is loopback", "::ffff:127.0.0.1"),
    ("6to4 carrying a public address", "2002:c000:20a::1"),
    ("Teredo whose server and client are public", "2001:0:c000:201:0:ffff:39cc:9bf8"),
]


@pytest.mark.parametrize("front", [check, check_blocking], ids=["async", "blocking"])
@pytest.mark.parametrize("reason,host", ALLOWED, ids=[r[0] for r in ALLOWED])
def test_allowed(front, reason: str, host: str) -> None:
    destination = front(host)
    assert destination.addresses and destination.port == 587


def test_names_are_resolved_once_and_the_checked_addresses_returned() -> None:
    destination = check("localhost", 25)
    assert {str(a) for a in destination.addresses} <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize("front", [check, check_blocking], ids=["async", "blocking"])
def test_a_name_the_idna_codec_refuses_is_a_failed_lookup_not_a_crash(front) -> None:
    from smtpconfig.core.errors import Unavailable

    with pytest.raises(Unavailable, match="not a valid host name"):
        front("a" * 64 + ".example")
