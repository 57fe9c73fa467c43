"""Every rule of SPEC §3-§4, through both API versions, over a real channel.

Each case is a stored valid profile, then an update that breaks one rule: the call must fail with
INVALID_ARGUMENT, the BadRequest detail must name the field, and the stored profile must be exactly
what it was (same etag, same content).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from smtpconfig.api.status import MAX_VIOLATIONS
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.profiles import BASIC_V1, BASIC_V2, DROP, OAUTH_V2, as_json, edit, v1_profile, v2_profile
from tests.kits.support import violations


@dataclass(frozen=True)
class Case:
    reason: str
    doc: dict[str, Any]
    field: str
    says: str = ""  # a phrase the description must contain, where the wording matters

    def __str__(self) -> str:
        return self.reason


HEADER = {"Name": "X-Tenant", "Value": "t1"}

V2_CASES = [
    Case("Id other than 0 or 1", edit(BASIC_V2, Id=2), "Id"),
    Case("negative Id", edit(BASIC_V2, Id=-1), "Id"),
    Case("Host missing", edit(BASIC_V2, Host=DROP), "Host", "required"),
    Case("Host with a scheme", edit(BASIC_V2, Host="smtp://mail.example.com"), "Host", "scheme"),
    Case("Host with a port", edit(BASIC_V2, Host="mail.example.com:587"), "Host", "port"),
    Case("Host with a path", edit(BASIC_V2, Host="mail.example.com/relay"), "Host", "path"),
    Case("Host with whitespace", edit(BASIC_V2, Host="mail example.com"), "Host", "whitespace"),
    Case("Host with trailing newline", edit(BASIC_V2, Host="mail.example.com\n"), "Host"),
    Case("Host label starting with a hyphen", edit(BASIC_V2, Host="-mail.example.com"), "Host"),
    Case("Host label of 64 characters", edit(BASIC_V2, Host="a" * 64 + ".example.com"), "Host"),
    Case("Host longer than 253", edit(BASIC_V2, Host=("a" * 60 + ".") * 4 + "example.com"), "Host", "253"),
    Case("Host with an underscore", edit(BASIC_V2, Host="mail_relay.example.com"), "Host"),
    Case("Host not in ASCII", edit(BASIC_V2, Host="bücher.example"), "Host", "xn--"),
    Case("Host that is a broken IPv4 address", edit(BASIC_V2, Host="192.0.2.999"), "Host"),
    Case("Host IPv4 in brackets", edit(BASIC_V2, Host="[192.0.2.1]"), "Host"),
    Case("Port missing (required in v2)", edit(BASIC_V2, Port=DROP), "Port", "required"),
    Case("Port above 65535", edit(BASIC_V2, Port=65536), "Port"),
    Case("negative Port", edit(BASIC_V2, Port=-25), "Port"),
    Case("auth type 1 (Keyfactor, unsupported)", edit(BASIC_V2, RelayAuthenticationType=1),
         "RelayAuthenticationType", "does not support"),
    Case("auth type 4 (Keyfactor, unsupported)", edit(BASIC_V2, RelayAuthenticationType=4),
         "RelayAuthenticationType", "does not support"),
    Case("auth type unknown", edit(BASIC_V2, RelayAuthenticationType=9), "RelayAuthenticationType"),
    Case("Basic without username", edit(BASIC_V2, RelayUsername=DROP), "RelayUsername", "required"),
    Case("Basic without password", edit(BASIC_V2, RelayPassword=DROP), "RelayPassword", "required"),
    Case("Basic with an empty secret object", edit(BASIC_V2, RelayPassword={}), "RelayPassword"),
    Case("Basic with an empty inline password", edit(BASIC_V2, RelayPassword={"SecretValue": ""}),
         "RelayPassword.SecretValue"),
    Case("secret object with both value and provider",
         edit(BASIC_V2, RelayPassword={"SecretValue": "x", "Provider": 7}), "RelayPassword", "not both"),
    Case("Parameters beside an inline value",
         edit(BASIC_V2, RelayPassword={"SecretValue": "x", "Parameters": {"Key": "k"}}),
         "RelayPassword.Parameters"),
    Case("inline value over 64 KiB", edit(BASIC_V2, RelayPassword={"SecretValue": "x" * 65537}),
         "RelayPassword.SecretValue"),
    Case("Provider Id 0", edit(BASIC_V2, RelayPassword={"Provider": 0}), "RelayPassword.Provider"),
    Case("reference to a provider that does not exist",
         edit(BASIC_V2, RelayUsername={"Provider": 42, "Parameters": {"Secret": "s", "Key": "k"}}),
         "RelayUsername.Provider", "42"),
    Case("SenderAccount missing", edit(BASIC_V2, SenderAccount=DROP), "SenderAccount", "required"),
    Case("SenderAccount without @", edit(BASIC_V2, SenderAccount="relay.example.com"), "SenderAccount"),
    Case("SenderAccount without local part", edit(BASIC_V2, SenderAccount="@example.com"), "SenderAccount"),
    Case("SenderAccount without domain", edit(BASIC_V2, SenderAccount="relay@"), "SenderAccount"),
    Case("SenderAccount with a display name", edit(BASIC_V2, SenderAccount="Relay <relay@example.com>"),
         "SenderAccount", "SenderName"),
    Case("SenderAccount with a space", edit(BASIC_V2, SenderAccount="re lay@example.com"), "SenderAccount"),
    Case("SenderAccount with double dots", edit(BASIC_V2, SenderAccount="re..lay@example.com"), "SenderAccount"),
    Case("SenderAccount with a bad domain", edit(BASIC_V2, SenderAccount="relay@exa_mple.com"), "SenderAccount"),
    Case("SenderAccount with a CRLF", edit(BASIC_V2, SenderAccount="relay@example.com\r\nRCPT TO:<x@y.z>"),
         "SenderAccount"),
    Case("SenderAccount local part over 64", edit(BASIC_V2, SenderAccount="a" * 65 + "@example.com"),
         "SenderAccount", "64"),
    Case("SenderAccount over 254", edit(BASIC_V2, SenderAccount="a@" + ("b" * 50 + ".") * 5 + "com"),
         "SenderAccount", "254"),
    Case("SenderName missing", edit(BASIC_V2, SenderName=DROP), "SenderName", "required"),
    Case("SenderName only spaces", edit(BASIC_V2, SenderName="   "), "SenderName", "required"),
    Case("SenderName with CRLF (header injection)", edit(BASIC_V2, SenderName="Relay\r\nBcc: x@evil.test"),
         "SenderName", "control"),
    Case("SenderName with a tab", edit(BASIC_V2, SenderName="Relay\tTeam"), "SenderName", "control"),
    Case("SenderName with NUL", edit(BASIC_V2, SenderName="Relay\x00"), "SenderName", "control"),
    Case("SenderName with a Unicode line separator", edit(BASIC_V2, SenderName="Relay\u2028x"), "SenderName"),
    Case("SenderName over 256", edit(BASIC_V2, SenderName="é" * 257), "SenderName", "256"),
    Case("OAuth without ClientId", edit(OAUTH_V2, ClientId=DROP), "ClientId", "required"),
    Case("OAuth without ClientSecret", edit(OAUTH_V2, ClientSecret=DROP), "ClientSecret", "required"),
    Case("OAuth with an empty ClientSecret", edit(OAUTH_V2, ClientSecret={"SecretValue": ""}),
         "ClientSecret.SecretValue"),
    Case("OAuth without TokenEndpoint", edit(OAUTH_V2, TokenEndpoint=DROP), "TokenEndpoint", "required"),
    Case("TokenEndpoint not a URL", edit(OAUTH_V2, TokenEndpoint="login.example.com/token"), "TokenEndpoint"),
    Case("TokenEndpoint with another scheme", edit(OAUTH_V2, TokenEndpoint="ftp://login.example.com/t"),
         "TokenEndpoint"),
    Case("TokenEndpoint over plain http to a remote host",
         edit(OAUTH_V2, TokenEndpoint="http://login.example.com/token"), "TokenEndpoint", "https"),
    Case("TokenEndpoint with user info",
         edit(OAUTH_V2, TokenEndpoint="https://user:pw@login.example.com/token"), "TokenEndpoint", "user"),
    Case("TokenEndpoint with a fragment",
         edit(OAUTH_V2, TokenEndpoint="https://login.example.com/token#x"), "TokenEndpoint", "fragment"),
    Case("TokenEndpoint with a bad port",
         edit(OAUTH_V2, TokenEndpoint="https://login.example.com:99999/token"), "TokenEndpoint"),
    Case("TokenEndpoint over 2048",
         edit(OAUTH_V2, TokenEndpoint="https://login.example.com/" + "t" * 2040), "TokenEndpoint", "2048"),
    Case("bad TokenEndpoint even when unused",
         edit(BASIC_V2, TokenEndpoint="http://login.example.com/token"), "TokenEndpoint"),
    Case("TokenEndpoint with an empty user info: the host is not what it seems",
         edit(OAUTH_V2, TokenEndpoint="https://@login.example.com/token"), "TokenEndpoint", "user"),
    Case("TokenEndpoint with a backslash before @: parsers disagree on the host",
         edit(OAUTH_V2, TokenEndpoint="https://login.example.com\\@127.0.0.1/token"), "TokenEndpoint", "user"),
    Case("TokenEndpoint with port 0", edit(OAUTH_V2, TokenEndpoint="https://login.example.com:0/token"),
         "TokenEndpoint", "port"),
    Case("TokenEndpoint with a percent-encoded host, which resolvers read their own way",
         edit(OAUTH_V2, TokenEndpoint="https://%31%32%37.0.0.1/token"), "TokenEndpoint", "host"),
    Case("TokenEndpoint with a numeric-dotted host (127.1 is 127.0.0.1 to inet_aton)",
         edit(OAUTH_V2, TokenEndpoint="https://127.1/token"), "TokenEndpoint", "host"),
    Case("TokenEndpoint with an underscore in the host",
         edit(OAUTH_V2, TokenEndpoint="https://login_1.example.com/token"), "TokenEndpoint", "host"),
    Case("TokenEndpoint with a host name IDNA cannot encode (U+2100)",
         edit(OAUTH_V2, TokenEndpoint="https://log\u2100in.example.com/token"), "TokenEndpoint", "absolute URL"),
    Case("Scope with a double space", edit(OAUTH_V2, Scope="mail.send  offline"), "Scope"),
    Case("Scope with a leading space", edit(OAUTH_V2, Scope=" mail.send"), "Scope"),
    Case("Scope with a quote", edit(OAUTH_V2, Scope='mail."send'), "Scope"),
    Case("Scope with a backslash", edit(OAUTH_V2, Scope="mail\\send"), "Scope"),
    Case("Scope ending in a newline (found by the fuzz test)", edit(OAUTH_V2, Scope="openid\n"), "Scope"),
    Case("header name ending in a newline (found by the fuzz test)",
         edit(OAUTH_V2, RequestHeaders=[{"Name": "X-Tenant\n", "Value": "t1"}]), "RequestHeaders[0].Name"),
    Case("Audience with a newline", edit(OAUTH_V2, Audience="api://smtp\nx"), "Audience"),
    Case("33 request headers", edit(OAUTH_V2, RequestHeaders=[{"Name": f"X-H{i}", "Value": "v"} for i in range(33)]),
         "RequestHeaders", "32"),
    Case("header name with a space", edit(OAUTH_V2, RequestHeaders=[{"Name": "X Tenant", "Value": "v"}]),
         "RequestHeaders[0].Name"),
    Case("header name empty", edit(OAUTH_V2, RequestHeaders=[HEADER, {"Name": "", "Value": "v"}]),
         "RequestHeaders[1].Name"),
    Case("header name with a colon", edit(OAUTH_V2, RequestHeaders=[{"Name": "X-A:", "Value": "v"}]),
         "RequestHeaders[0].Name"),
    Case("Authorization header", edit(OAUTH_V2, RequestHeaders=[{"Name": "Authorization", "Value": "v"}]),
         "RequestHeaders[0].Name"),
    Case("Host header in lower case", edit(OAUTH_V2, RequestHeaders=[{"Name": "host", "Value": "v"}]),
         "RequestHeaders[0].Name"),
    Case("Content-Length header", edit(OAUTH_V2, RequestHeaders=[{"Name": "Content-Length", "Value": "1"}]),
         "RequestHeaders[0].Name"),
    Case("Content-Type header", edit(OAUTH_V2, RequestHeaders=[{"Name": "content-type", "Value": "x"}]),
         "RequestHeaders[0].Name"),
    Case("Transfer-Encoding header", edit(OAUTH_V2, RequestHeaders=[{"Name": "Transfer-Encoding", "Value": "x"}]),
         "RequestHeaders[0].Name"),
    Case("Connection header", edit(OAUTH_V2, RequestHeaders=[{"Name": "Connection", "Value": "close"}]),
         "RequestHeaders[0].Name"),
    Case("duplicate header names", edit(OAUTH_V2, RequestHeaders=[HEADER, {"Name": "x-tenant", "Value": "t2"}]),
         "RequestHeaders[1].Name"),
    Case("header value with CRLF", edit(OAUTH_V2, RequestHeaders=[{"Name": "X-A", "Value": "a\r\nX-B: b"}]),
         "RequestHeaders[0].Value"),
    Case("header value with LF", edit(OAUTH_V2, RequestHeaders=[{"Name": "X-A", "Value": "a\nb"}]),
         "RequestHeaders[0].Value"),
    Case("header value with NUL", edit(OAUTH_V2, RequestHeaders=[{"Name": "X-A", "Value": "a\x00"}]),
         "RequestHeaders[0].Value"),
]

V1_CASES = [
    Case("Id missing (required in v1)", edit(BASIC_V1, Id=DROP), "Id", "required"),
    Case("Id 0 (v1 wants 1)", edit(BASIC_V1, Id=0), "Id"),
    Case("Id 2", edit(BASIC_V1, Id=2), "Id"),
    Case("Host missing", edit(BASIC_V1, Host=DROP), "Host"),
    Case("Host with a scheme", edit(BASIC_V1, Host="smtps://mail.example.com"), "Host"),
    Case("Port 0 sent explicitly", edit(BASIC_V1, Port=0), "Port"),
    Case("Port above 65535", edit(BASIC_V1, Port=70000), "Port"),
    Case("OAuth through v1", edit(BASIC_V1, RelayAuthenticationType=3), "RelayAuthenticationType", "v2"),
    Case("auth type 1", edit(BASIC_V1, RelayAuthenticationType=1), "RelayAuthenticationType", "does not support"),
    Case("auth type 4", edit(BASIC_V1, RelayAuthenticationType=4), "RelayAuthenticationType", "does not support"),
    Case("Basic without username", edit(BASIC_V1, RelayUsername=DROP), "RelayUsername", "required"),
    Case("Basic without password", edit(BASIC_V1, RelayPassword=DROP), "RelayPassword", "required"),
    Case("Basic with an empty password", edit(BASIC_V1, RelayPassword=""), "RelayPassword"),
    Case("password over 64 KiB", edit(BASIC_V1, RelayPassword="p" * 65537), "RelayPassword"),
    Case("UnsupportedPAMSecret with no stored reference", edit(BASIC_V1, RelayUsername="UnsupportedPAMSecret"),
         "RelayUsername", "UnsupportedPAMSecret"),
    Case("SenderAccount missing", edit(BASIC_V1, SenderAccount=DROP), "SenderAccount"),
    Case("SenderAccount not a mailbox", edit(BASIC_V1, SenderAccount="relay"), "SenderAccount"),
    Case("SenderName with CRLF", edit(BASIC_V1, SenderName="x\r\nBcc: y@z.test"), "SenderName"),
    Case("SenderName missing", edit(BASIC_V1, SenderName=DROP), "SenderName"),
]


def _stored(stub, request_class):
    reply = stub.GetSmtp(request_class())
    return reply.etag, as_json(reply.profile)


def _assert_rejected(stub, get_request, request, field: str, says: str = "") -> list[tuple[str, str]]:
    before = _stored(stub, get_request)
    with pytest.raises(grpc.RpcError) as failure:
        stub.UpdateSmtp(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
    found = violations(failure.value)
    fields = [f for f, _ in found]
    assert field in fields, f"{field} not named in {found}"
    if says:
        described = " ".join(d for f, d in found if f == field)
        assert says in described, f"{says!r} not in {described!r}"
    assert _stored(stub, get_request) == before, "a rejected update changed the stored profile"
    return found


@pytest.mark.parametrize("case", V2_CASES, ids=str)
def test_v2_rule(v2_stub: v2_grpc.ConfigServiceStub, case: Case) -> None:
    v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    _assert_rejected(
        v2_stub, v2.GetSmtpRequest, v2.UpdateSmtpRequest(profile=v2_profile(case.doc)), case.field, case.says
    )


@pytest.mark.parametrize("case", V1_CASES, ids=str)
def test_v1_rule(v1_stub: v1_grpc.ConfigServiceStub, case: Case) -> None:
    v1_stub.UpdateSmtp(v1.UpdateSmtpRequest(profile=v1_profile(BASIC_V1)))
    _assert_rejected(
        v1_stub, v1.GetSmtpRequest, v1.UpdateSmtpRequest(profile=v1_profile(case.doc)), case.field, case.says
    )


VAULT_REF = {"Provider": 7, "Parameters": {"Secret": "smtp", "Key": "password"}}

REFERENCE_CASES = [
    Case("unknown parameter key",
         edit(BASIC_V2, RelayPassword={"Provider": 7, "Parameters": {"Secret": "s", "Key": "k", "Path": "p"}}),
         "RelayPassword.Parameters.Path", "not an instance parameter"),
    Case("initialization parameter used as an instance parameter",
         edit(BASIC_V2, RelayPassword={"Provider": 7, "Parameters": {"Secret": "s", "Key": "k", "Host": "h"}}),
         "RelayPassword.Parameters.Host"),
    Case("required parameter missing", edit(BASIC_V2, RelayPassword={"Provider": 7, "Parameters": {"Secret": "s"}}),
         "RelayPassword.Parameters.Key", "required"),
    Case("required parameter empty",
         edit(BASIC_V2, RelayPassword={"Provider": 7, "Parameters": {"Secret": "s", "Key": ""}}),
         "RelayPassword.Parameters.Key", "required"),
    Case("no parameters at all", edit(BASIC_V2, ClientSecret=DROP, RelayPassword={"Provider": 7}),
         "RelayPassword.Parameters.Secret"),
    Case("unknown provider beside a known one",
         edit(BASIC_V2, RelayUsername=VAULT_REF, RelayPassword={"Provider": 8, "Parameters": {"Secret": "s"}}),
         "RelayPassword.Provider", "8"),
]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=str)
def test_provider_reference_rule(server_with_provider, case: Case) -> None:
    with server_with_provider.channel() as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=VAULT_REF))))
        _assert_rejected(
            stub, v2.GetSmtpRequest, v2.UpdateSmtpRequest(profile=v2_profile(case.doc)), case.field, case.says
        )


def test_every_bad_field_is_reported_not_just_the_first(v2_stub) -> None:
    v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    doc = edit(BASIC_V2, Id=5, Host="a b", Port=0, RelayPassword=DROP, SenderAccount="x", SenderName="a\nb")
    found = _assert_rejected(v2_stub, v2.GetSmtpRequest, v2.UpdateSmtpRequest(profile=v2_profile(doc)), "Host")
    assert {f for f, _ in found} == {"Id", "Host", "Port", "RelayPassword", "SenderAccount", "SenderName"}


def _trailer_bytes(error: grpc.RpcError) -> int:
    """What the status took in trailers, as a client's metadata limit counts it (name, value and
    32 bytes per entry), with the message as sent: percent-encoded."""
    message = len(urllib.parse.quote(error.details() or "", safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"))
    return message + sum(len(k) + len(v) + 32 for k, v in error.trailing_metadata() or ())


def test_thousands_of_violations_come_back_as_the_first_few_and_a_count(v2_stub) -> None:
    """5,000 bad header names once made a trailer of over 16 KiB, which the client refused: it saw
    RESOURCE_EXHAUSTED instead of the answer. grpc's default client limit is 8 KiB."""
    stored = v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(OAUTH_V2)))
    headers = [{"Name": f"bad name {n}", "Value": "v"} for n in range(5000)]
    request = v2.UpdateSmtpRequest(profile=v2_profile(edit(OAUTH_V2, RequestHeaders=headers)))
    found = _assert_rejected(v2_stub, v2.GetSmtpRequest, request, "RequestHeaders[0].Name", "HTTP token")
    *listed, (last_field, last) = found
    assert 10 <= len(listed) <= MAX_VIOLATIONS
    assert listed[-1][0].startswith("RequestHeaders[") and last_field == ""
    more = int(re.fullmatch(r"and (\d+) more violations, not listed", last).group(1))
    assert len(listed) + more == 5001  # each name, and the count of headers
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.UpdateSmtp(request)
    assert failure.value.details().endswith(" more")
    assert _trailer_bytes(failure.value) < 6 * 1024
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).etag == stored.etag


def test_a_megabyte_field_is_quoted_cut_in_the_error(v2_stub) -> None:
    """A name a caller sends is quoted in the error only in part, marked as cut."""
    stored = v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    request = v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2))
    request.update_mask.paths.append("\u00e9\n" * 330_000)  # ~1 MB; non-ASCII is percent-encoded
    found = _assert_rejected(v2_stub, v2.GetSmtpRequest, request, "update_mask")
    assert any("…[cut, " in description for _, description in found), found
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.UpdateSmtp(request)
    assert "\n" not in failure.value.details() and "…" in failure.value.details()
    assert _trailer_bytes(failure.value) < 6 * 1024
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).etag == stored.etag


def test_first_write_rejected_leaves_nothing_stored(v2_stub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Host=""))))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as missing:
        v2_stub.GetSmtp(v2.GetSmtpRequest())
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_update_mask_path_is_named(v2_stub) -> None:
    v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    request = v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=2525)))
    request.update_mask.paths.extend(["Port", "RelayPassword.SecretValue"])
    _assert_rejected(v2_stub, v2.GetSmtpRequest, request, "update_mask", "replaced whole")


def test_v1_mask_cannot_name_v2_fields(v1_stub) -> None:
    v1_stub.UpdateSmtp(v1.UpdateSmtpRequest(profile=v1_profile(BASIC_V1)))
    request = v1.UpdateSmtpRequest(profile=v1_profile(BASIC_V1))
    request.update_mask.paths.append("ClientSecret")
    _assert_rejected(v1_stub, v1.GetSmtpRequest, request, "update_mask")


VALID_V2 = [
    ("IPv4 literal host", edit(BASIC_V2, Host="192.0.2.10")),
    ("IPv6 literal host", edit(BASIC_V2, Host="2001:db8::25")),
    ("bracketed IPv6 host", edit(BASIC_V2, Host="[2001:db8::25]")),
    ("single-label host", edit(BASIC_V2, Host="mailrelay")),
    ("absolute host name with a trailing dot", edit(BASIC_V2, Host="smtp.example.com.")),
    ("Id 0 means 1", edit(BASIC_V2, Id=0)),
    ("anonymous relay drops unused credentials", edit(BASIC_V2, RelayAuthenticationType=0)),
    ("Unicode sender name", edit(BASIC_V2, SenderName="Zoë Ω 送信者")),
    ("address literal domain", edit(BASIC_V2, SenderAccount="relay@[192.0.2.1]")),
    ("plain http token endpoint on loopback", edit(OAUTH_V2, TokenEndpoint="http://127.0.0.1:8080/token")),
    ("plain http token endpoint on localhost", edit(OAUTH_V2, TokenEndpoint="http://localhost/token")),
    ("token endpoint with an internationalised host name",
     edit(OAUTH_V2, TokenEndpoint="https://bücher.example/oauth2/token")),
    ("plain http token endpoint on bracketed IPv6 loopback", edit(OAUTH_V2, TokenEndpoint="http://[::1]:8080/token")),
    ("token endpoint with a query", edit(OAUTH_V2, TokenEndpoint="https://login.example.com/token?api-version=2")),
    ("32 request headers", edit(OAUTH_V2, RequestHeaders=[{"Name": f"X-H{i}", "Value": "v"} for i in range(32)])),
    ("password with spaces and $ kept exactly", edit(BASIC_V2, RelayPassword={"SecretValue": "  $HOME pa ss\n"})),
]


@pytest.mark.parametrize("reason,doc", VALID_V2, ids=[r for r, _ in VALID_V2])
def test_v2_accepts(v2_stub, reason: str, doc: dict[str, Any]) -> None:
    reply = v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)))
    assert reply.etag
    assert as_json(v2_stub.GetSmtp(v2.GetSmtpRequest()).profile)["Host"] == doc["Host"]
