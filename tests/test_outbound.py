"""Every outbound connection is checked and pinned, and no redirect carries a credential (SPEC §9,
issue 9 §3): Vault, token endpoints and SMTP relays, attacked through the running service by callers
that hold only the permissions the attack needs.

Forbidden addresses are dialled only inside a network namespace each test creates
(`tests.kits.netns`): there, 169.254.169.254, 6to4 and Teredo addresses sit on the loopback interface
with a listener (a trap) on each, and a DNS server on 127.0.0.1 answers as the test scripts it
(a name that answers 127.0.0.1 first and 169.254.169.254 after: DNS rebinding). A trap that saw no
connection proves the refusal came before any connection. Redirect and TLS tests run on
127.0.0.1 directly.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from smtpconfig.api.auth import token_hash
from smtpconfig.core.secret import Secret
from smtpconfig.plugin import ProviderUnavailable
from smtpconfig.plugin.testing import call_resolve
from smtpconfig.providers.vault import VaultProvider
from smtpconfig.providers.vault import fastread as vault_fastread
from smtpconfig.providers.vault import transport as vault_transport
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits import netns
from tests.kits.fakevault import FakeVault
from tests.kits.oauthkit import TokenEndpoint
from tests.kits.support import ServerThread, short_dir, token_channel
from tests.kits.testca import make_pki

VAULT_TOKEN = "PLANTED-vault-token-3e1f"
SECRET_ID = "PLANTED-approle-secret-id-77c2"
CLIENT_ID = "outbound-client"
CLIENT_SECRET = "PLANTED-client-secret-b6a0"
VALUE = "PLANTED-value-from-vault-51d9"
# What the namespace puts on its loopback interface: the metadata address and forms that carry it.
METADATA = "169.254.169.254"
FORBIDDEN = {
    "metadata address": METADATA,
    "IPv4 link-local": "169.254.10.1",
    "6to4 carrying the metadata address": "2002:a9fe:a9fe::1",
    "Teredo whose server is the metadata address": "2001:0:a9fe:a9fe:0:ffff:3fff:fdfe",
    "Teredo whose client is the metadata address": "2001:0:c000:201:0:ffff:5601:5601",
    "NAT64 carrying the metadata address": "64:ff9b::a9fe:a9fe",
}
# Vault Host values (before ":port"), the trap that would receive them, and why each is refused.
VAULT_HOSTS = [
    ("metadata address", METADATA, METADATA),
    ("IPv4-mapped metadata address", "[::ffff:169.254.169.254]", METADATA),
    ("IPv4-mapped, hex spelling", "[::ffff:a9fe:a9fe]", METADATA),
    ("IPv4 link-local", "169.254.10.1", "169.254.10.1"),
    ("6to4 carrying the metadata address", "[2002:a9fe:a9fe::1]", "2002:a9fe:a9fe::1"),
    ("Teredo whose server is the metadata address", "[2001:0:a9fe:a9fe:0:ffff:3fff:fdfe]",
     "2001:0:a9fe:a9fe:0:ffff:3fff:fdfe"),
    ("Teredo whose client is the metadata address", "[2001:0:c000:201:0:ffff:5601:5601]",
     "2001:0:c000:201:0:ffff:5601:5601"),
    ("NAT64 carrying the metadata address", "[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"),
    ("a name that resolves to the metadata address", "metadata.test", METADATA),
    ("a name with a 6to4 answer", "sixtofour.test", "2002:a9fe:a9fe::1"),
    ("the metadata address as one hex number (inet_aton)", "0xa9fea9fe", METADATA),
]
NAMES = {"metadata.test": [[METADATA]], "sixtofour.test": [["2002:a9fe:a9fe::1"]]}


# --- a server with identities that hold only what an attack needs -------------------------------


class Attacker:
    """A running server, and a channel for an identity holding only `permissions`."""

    def __init__(self, permissions: tuple[str, ...], **settings: Any) -> None:
        token = "mallory-" + "x" * 40
        self.data_dir = short_dir("ob")
        self.server = ServerThread(self.data_dir, tokens=(("mallory", token_hash(token)),),
                                   policy=(("mallory", permissions),), provider_timeout=5.0,
                                   provider_failure_ttl=0.0, **settings).start()
        self.channel = token_channel(self.server.target, token)
        self.providers = pb_grpc.SecretProviderServiceStub(self.channel)
        self.config = v2_grpc.ConfigServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def vault(self, host: str, **init: str) -> int:
        instance = pb.ProviderInstance(name=f"v{abs(hash(host)) % 10**8}", provider_type="vault")
        for key, value in {"Host": host, **(init or {"Token": VAULT_TOKEN})}.items():
            instance.initialization[key].value = value
        return self.providers.CreateProvider(pb.CreateProviderRequest(provider=instance), timeout=10).provider.id

    def check(self, provider: int) -> tuple[str, str]:
        """(status code name, details) of CheckSecret on provider's secret smtp/relay, key password."""
        secret = secret_pb2.SecretObject(provider=provider, parameters={"Secret": "smtp/relay", "Key": "password"})
        try:
            self.providers.CheckSecret(pb.CheckSecretRequest(secret=secret), timeout=20)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
        return "OK", ""

    def store_oauth(self, endpoint: str) -> None:
        profile = json_format.ParseDict({
            "Host": "127.0.0.1", "Port": 587, "RelayAuthenticationType": 3,
            "ClientId": {"SecretValue": CLIENT_ID}, "ClientSecret": {"SecretValue": CLIENT_SECRET},
            "TokenEndpoint": endpoint, "SenderAccount": "relay@example.com", "SenderName": "Relay",
            "UseSSL": True,
        }, v2.SmtpProfile())
        self.config.UpdateSmtp(v2.UpdateSmtpRequest(profile=profile), timeout=10)

    def resolve(self) -> tuple[str, str, str]:
        """(status code name, details, access token) of ResolveSmtp."""
        try:
            answer = self.config.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=20)
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", ""
        return "OK", "", answer.credentials.access_token


VAULT_ATTACKER = ("providers:modify", "providers:read")
OAUTH_ATTACKER = ("smtp:modify", "smtp:resolve")


@pytest.fixture
def vault_attacker() -> Iterator[Attacker]:
    attacker = Attacker(VAULT_ATTACKER)
    yield attacker
    attacker.close()


# --- Vault: checked before any connection, in every address form ------------------------------


def _vault_refusals(hosts: list[list[str]]) -> list[dict[str, Any]]:
    """In the namespace: a Vault instance per Host form, each checked once, and what the traps saw."""
    traps = {address: netns.Trap(address, 8200) for address in FORBIDDEN.values()}
    attacker = Attacker(VAULT_ATTACKER)
    try:
        results = []
        for case, host, trap in hosts:
            try:
                provider = attacker.vault(f"http://{host}:8200")
            except grpc.RpcError as error:  # an address in numeric form is refused when written
                code, details = error.code().name, error.details() or ""
            else:
                code, details = attacker.check(provider)
            results.append({"case": case, "code": code, "details": details,
                            "trap": [r.decode("latin-1") for r in traps[trap].received]})
        return results
    finally:
        attacker.close()


def test_vault_hosts_that_reach_a_forbidden_address_are_refused_before_any_connection() -> None:
    results = netns.run(_vault_refusals, [list(h) for h in VAULT_HOSTS], addresses=tuple(FORBIDDEN.values()),
                        names=NAMES)
    assert [r["case"] for r in results] == [h[0] for h in VAULT_HOSTS]
    for result, (_, host, _) in zip(results, VAULT_HOSTS, strict=True):
        assert result["trap"] == [], f"{result['case']}: the forbidden address was dialled: {result['trap']}"
        assert VAULT_TOKEN not in result["details"], result
        if host.endswith(".test"):  # a name: what it resolves to is known only when connecting
            assert result["code"] == "FAILED_PRECONDITION", result
            assert "refusing to connect" in result["details"], result
        else:  # an address, in any spelling: refused on write, nothing stored
            assert result["code"] == "INVALID_ARGUMENT", result
            assert "Initialization.Host" in result["details"] and "no connection goes there" in result["details"], result


# --- pinning: the address checked is the address dialled ---------------------------------------


def _rebinding_vault() -> dict[str, Any]:
    """In the namespace: vault.test answers 127.0.0.1, then 169.254.169.254; Vault is on the first."""
    with FakeVault({"smtp/relay": {"password": VALUE}}) as vault:
        trap = netns.Trap(METADATA, vault.port)
        attacker = Attacker(VAULT_ATTACKER)
        try:
            code, details = attacker.check(attacker.vault(f"http://vault.test:{vault.port}"))
        finally:
            attacker.close()
        return {"code": code, "details": details, "trap": len(trap.received),
                "seen": [(s.path, s.host, s.token == VAULT_TOKEN) for s in vault.seen]}


def test_vault_connects_to_the_address_it_checked_not_a_second_lookup() -> None:
    result = netns.run(_rebinding_vault, addresses=(METADATA,),
                       names={"vault.test": [["127.0.0.1"], [METADATA]]})
    assert result["trap"] == 0, "a second lookup was dialled: DNS rebinding reached the metadata address"
    assert result["code"] == "OK", result
    (path, host, token) = result["seen"][0]
    assert path == "/v1/secret/data/smtp/relay" and host.startswith("vault.test:") and token


def _rebinding_token_endpoint(directory: str) -> dict[str, Any]:
    """In the namespace: idp.test answers 127.0.0.1, then 169.254.169.254; the IdP is on the
    first, with a certificate for idp.test only (not for 127.0.0.1)."""
    from pathlib import Path

    pki = make_pki(Path(directory), sans=("idp.test",))
    with TokenEndpoint({CLIENT_ID: CLIENT_SECRET}, certfile=pki.localhost.cert, keyfile=pki.localhost.key,
                       url_host="idp.test") as idp:
        trap = netns.Trap(METADATA, idp.port)
        attacker = Attacker(OAUTH_ATTACKER, ca_bundle=str(pki.ca))
        try:
            attacker.store_oauth(idp.url)
            code, details, token = attacker.resolve()
        finally:
            attacker.close()
        requests = idp.token_requests
        return {"code": code, "details": details, "valid": idp.token_valid(token), "trap": len(trap.received),
                "hosts": [r.header("host") for r in requests], "tls": [r.tls for r in requests],
                "url": idp.url}


def test_token_endpoint_is_dialled_at_the_checked_address_with_the_name_for_host_and_tls(tmp_path) -> None:
    result = netns.run(_rebinding_token_endpoint, str(tmp_path), addresses=(METADATA,),
                       names={"idp.test": [["127.0.0.1"], [METADATA]]})
    assert result["trap"] == 0, "the client secret went to the metadata address (DNS rebinding)"
    assert result["code"] == "OK" and result["valid"], result
    # Received on 127.0.0.1 over TLS verified against idp.test (the certificate names nothing else).
    port = result["url"].split(":")[2].split("/")[0]
    assert result["hosts"] == [f"idp.test:{port}"] and result["tls"] == [True]


def _token_endpoint_to_metadata() -> dict[str, Any]:
    """In the namespace: idp.test resolves to the metadata address, where a trap listens."""
    trap = netns.Trap(METADATA, 8443)
    attacker = Attacker(OAUTH_ATTACKER)
    try:
        attacker.store_oauth("https://idp.test:8443/token")
        code, details, _ = attacker.resolve()
    finally:
        attacker.close()
    return {"code": code, "details": details, "trap": len(trap.received)}


def test_token_endpoint_name_resolving_to_metadata_is_refused_before_any_connection() -> None:
    result = netns.run(_token_endpoint_to_metadata, addresses=(METADATA,), names={"idp.test": [[METADATA]]})
    assert result["trap"] == 0
    assert result["code"] == "FAILED_PRECONDITION" and "metadata" in result["details"], result
    assert CLIENT_SECRET not in result["details"]


# --- SMTP relays: looked up once, on the SMTP thread, and dialled at the checked address ----------

SMTP_TESTER = ("smtp:test",)


def _test_relay(attacker: Attacker, host: str, port: int) -> dict[str, Any]:
    """TestSmtp of an anonymous plaintext profile for host:port, as (outcome, step) facts."""
    profile = json_format.ParseDict({
        "Id": 1, "Host": host, "Port": port, "RelayAuthenticationType": 0, "SenderAccount": "relay@example.com",
        "SenderName": "Relay", "UseSSL": False}, v2.SmtpProfile())
    reply = attacker.config.TestSmtp(v2.TestSmtpRequest(profile=profile, test_recipient="ops@example.org"), timeout=20)
    return {"success": reply.success,
            "steps": [(s.name, v2.StepOutcome.Name(s.outcome), s.message, s.hint) for s in reply.steps]}


def _smtp_names() -> dict[str, Any]:
    """In the namespace: relay.test resolves to the metadata address, where a trap listens on the
    SMTP port; missing.test does not resolve at all."""
    trap = netns.Trap(METADATA, 2525)
    attacker = Attacker(SMTP_TESTER)
    try:
        return {"metadata": _test_relay(attacker, "relay.test", 2525),
                "missing": _test_relay(attacker, "missing.test", 2525), "trap": len(trap.received)}
    finally:
        attacker.close()


def test_smtp_hosts_that_resolve_to_metadata_or_nothing_fail_at_connect_before_any_connection() -> None:
    result = netns.run(_smtp_names, addresses=(METADATA,), names={"relay.test": [[METADATA]]})
    assert result["trap"] == 0
    for case, words in (("metadata", "resolves to 169.254.169.254, a cloud metadata address"),
                        ("missing", "name lookup failed")):
        reply = result[case]
        assert not reply["success"]
        assert [(name, outcome) for name, outcome, _, _ in reply["steps"]][-1] == ("connect", "STEP_OUTCOME_FAILED"), reply
        _, _, message, hint = reply["steps"][-1]
        assert words in message and "reachable" in hint, reply


def _rebinding_relay() -> dict[str, Any]:
    """In the namespace: relay.test answers 127.0.0.1, where the SMTP server is, then the
    metadata address, where a trap listens on the same port."""
    from tests.kits.smtpkit import SmtpServer

    with SmtpServer("plain") as smtp:
        trap = netns.Trap(METADATA, smtp.port)
        attacker = Attacker(SMTP_TESTER)
        try:
            reply = _test_relay(attacker, "relay.test", smtp.port)
        finally:
            attacker.close()
        return {**reply, "trap": len(trap.received), "delivered": [m.rcpt_tos for m in smtp.messages]}


def test_smtp_connects_to_the_address_it_checked_not_a_second_lookup() -> None:
    result = netns.run(_rebinding_relay, addresses=(METADATA,), names={"relay.test": [["127.0.0.1"], [METADATA]]})
    assert result["trap"] == 0, "a second lookup was dialled: DNS rebinding reached the metadata address"
    assert result["success"], result
    assert result["delivered"] == [["ops@example.org"]]


# --- redirects carry nothing -------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["token", "approle"])
def test_vault_redirect_is_an_error_and_the_other_host_receives_nothing(vault_attacker: Attacker, auth: str) -> None:
    with FakeVault({"smtp/relay": {"password": VALUE}}) as elsewhere:
        with FakeVault(redirect_to=f"http://127.0.0.1:{elsewhere.port}") as vault:
            init = {"Token": VAULT_TOKEN} if auth == "token" else {
                "AuthMethod": "approle", "RoleId": "role", "SecretId": SECRET_ID}
            code, details = vault_attacker.check(vault_attacker.vault(f"http://127.0.0.1:{vault.port}", **init))
            assert len(vault.seen) == 1, "one request, answered with the redirect"
        assert elsewhere.seen == [], "the redirect was followed"
    assert code == "UNAVAILABLE" and "redirect (HTTP 307)" in details and "not followed" in details, details
    assert f"127.0.0.1:{elsewhere.port}" in details
    assert VAULT_TOKEN not in details and SECRET_ID not in details and "/v1/" not in details


def test_a_vault_redirect_that_names_the_login_token_is_reported_without_it(vault_attacker: Attacker) -> None:
    """The refusal quotes where the redirect pointed: a Vault that puts the token its AppRole
    login returned (which the service never saw) into that host name does not get it into the
    message, though the host name is lower-cased on the way."""
    token = "PLANTED-Login-Token-9a7e"
    with FakeVault(redirect_to="http://{token}.invalid", login_token=token, logins_too=False) as vault:
        code, details = vault_attacker.check(vault_attacker.vault(
            f"http://127.0.0.1:{vault.port}", AuthMethod="approle", RoleId="role", SecretId=SECRET_ID))
        assert [s.token for s in vault.seen] == [None, token], "the login, then the read"
    assert code == "UNAVAILABLE" and "redirect (HTTP 307) to http://**********.invalid" in details, details
    assert token.lower() not in details.lower()


def test_token_endpoint_redirect_is_an_error_and_the_other_host_receives_nothing() -> None:
    attacker = Attacker(OAUTH_ATTACKER)
    try:
        with TokenEndpoint({CLIENT_ID: CLIENT_SECRET}) as elsewhere, TokenEndpoint({CLIENT_ID: CLIENT_SECRET}) as idp:
            idp.force_http_status(307, "", headers={"Location": elsewhere.url})
            attacker.store_oauth(idp.url)
            code, details, token = attacker.resolve()
            assert len(idp.token_requests) == 1 and elsewhere.requests == []
    finally:
        attacker.close()
    assert code not in ("OK", "INTERNAL", "UNKNOWN") and token == "", (code, details)
    assert CLIENT_SECRET not in details


# --- Vault over TLS: the name is checked, the address is dialled -------------------------------


def test_vault_tls_is_verified_against_the_host_name_while_dialling_its_address(tmp_path) -> None:
    pki = make_pki(tmp_path, sans=("localhost",))  # no IP in the certificate: only the name verifies
    with FakeVault({"smtp/relay": {"password": VALUE}}, certfile=str(pki.localhost.cert),
                   keyfile=str(pki.localhost.key)) as vault:
        init = {"Host": f"https://localhost:{vault.port}", "Token": Secret(VAULT_TOKEN), "CaBundle": str(pki.ca)}
        provider = VaultProvider(timeout=5)
        reference = {"Secret": "smtp/relay", "Key": "password"}

        async def twice() -> list:
            # The first read goes through hvac; the second, with the token held, on the event loop.
            return [await provider.resolve(reference, init) for _ in range(2)]

        try:
            assert [r.value.reveal() for r in asyncio.run(twice())] == [VALUE, VALUE]
            assert provider.loop_reads == 1
            assert len(vault.seen) == 2
            for seen in vault.seen:
                assert seen.host == f"localhost:{vault.port}" and seen.server_name == "localhost" and seen.token
            by_address = {**init, "Host": f"https://127.0.0.1:{vault.port}"}
            with pytest.raises(ProviderUnavailable, match="certificate verification failed"):
                call_resolve(provider, reference, by_address)
        finally:
            provider.close()


def test_vault_reads_on_the_event_loop_dial_only_the_checked_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve, checked to 127.0.0.1: both paths dial what the check gave,
    once per new connection, and send the name as Host."""
    looked_up: list[str] = []

    def check(host: str, port: int, *, what: str) -> tuple[str, ...]:
        looked_up.append(host)
        return ("127.0.0.1",)

    monkeypatch.setattr(vault_transport, "check_destination", check)
    monkeypatch.setattr(vault_fastread, "check_destination", check)
    with FakeVault({"smtp/relay": {"password": VALUE}}) as vault:
        init = {"Host": f"http://vault.invalid:{vault.port}", "Token": Secret(VAULT_TOKEN)}
        provider = VaultProvider(timeout=5)
        reference = {"Secret": "smtp/relay", "Key": "password"}

        async def thrice() -> list:
            return [await provider.resolve(reference, init) for _ in range(3)]

        try:
            assert [r.value.reveal() for r in asyncio.run(thrice())] == [VALUE] * 3
            assert provider.loop_reads == 2
        finally:
            provider.close()
    assert [seen.host for seen in vault.seen] == [f"vault.invalid:{vault.port}"] * 3
    assert looked_up == ["vault.invalid", "vault.invalid"], "one check per new connection: hvac's, the loop's"


# --- TokenEndpoint: what validation accepts, the client can use ---------------------------------

# Pieces of odd URLs: each accepted combination must resolve or fail cleanly, never crash.
SCHEMES = ["https://", "https://", "https://", "http://", "HTTP://", "hTtPs://",
           "ftp://", "https:/", "https:", "http:///", "//", ""]
USERINFO = ["", "", "", "user@", "@", "u:p@", "evil.example\\@", "a%40b@", "127.0.0.1@"]
HOSTS = [
    "127.0.0.1", "localhost", "LOCALHOST", "localhost.", "ip6-localhost", "[::1]", "::1", "[::1", "::1]",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "127.1", "0x7f.0.0.1", "2130706433", "0177.0.0.1",
    "[fe80::1%25lo]", "[fe80::1%lo]", "169.254.169.254", "[2002:a9fe:a9fe::1]", "[64:ff9b::a9fe:a9fe]",
    "b\u00fccher.test", "xn--a", "xn--bcher-kva.test", "a" * 64 + ".test", "a..b", ".", "",
    "%31%32%37.0.0.1", "127.0.0.1.", "ex ample.test", "\u2100", "\u017f.test", "\U0001d7cf\U0001d7d0\U0001d7d5.0.0.1",
    "[v1.x]", "[127.0.0.1]", "idp.test", "under_score.test", "127.0.0.1\\", "127.0.0.1%00", "\uff0e",
]
SUFFIXES = ["/token", "", "/", "/token?x=1", "/token#f", "#", "?", "/t\\x", "/%2e%2e/token", "/t\u00f6k",
            "/t t", "/@x", "\\token", "/token?a=@b", "/%zz", "/" + "t" * 3000]


def _ports(port: int) -> Any:
    from hypothesis import strategies as st

    return st.sampled_from([f":{port}", f":{port}", "", ":", ":0", ":65536", ":99999", f":0{port}", ":-1",
                            f": {port}", ":80x", ":" + "9" * 30, f":{port}:{port}", ":\u0661"])


def _endpoints(port: int) -> Any:
    from hypothesis import strategies as st

    def usually(common: str, odd: Any) -> Any:  # mostly the ordinary piece, so many URLs pass
        return st.integers(0, 2).flatmap(lambda i: odd if i == 0 else st.just(common))

    hosts = st.integers(0, 5).flatmap(
        lambda i: st.text(max_size=12) if i == 0 else st.sampled_from(HOSTS) if i < 4 else st.just("127.0.0.1"))
    parts = st.tuples(usually("http://", st.sampled_from(SCHEMES)), usually("", st.sampled_from(USERINFO)), hosts,
                      usually(f":{port}", _ports(port)),
                      usually("/token", st.one_of(st.sampled_from(SUFFIXES), st.text(max_size=12))))
    return st.integers(0, 4).flatmap(lambda i: st.text(max_size=40) if i == 0 else parts.map("".join))


def _token_endpoint_property(examples: int) -> dict[str, Any]:
    """In the namespace (only loopback; every name but the scripted ones is NXDOMAIN): every
    TokenEndpoint UpdateSmtp accepts makes ResolveSmtp and TestSmtp answer, never INTERNAL or UNKNOWN."""
    from hypothesis import HealthCheck, example, given, settings

    seen = {"accepted": 0, "refused": 0, "codes": {}}
    crashes = {"INTERNAL", "UNKNOWN"}
    with TokenEndpoint({CLIENT_ID: CLIENT_SECRET}) as idp:
        attacker = Attacker(OAUTH_ATTACKER + ("smtp:test",), smtp_timeout=2.0)
        try:
            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(_endpoints(idp.port))
            # Found before the fix: URLs both parsers accepted but the client then choked on.
            @example(f"https://xn--a.test:{idp.port}/token")
            @example("https://" + "a" * 64 + f".test:{idp.port}/token")
            def accepted_endpoints_never_crash(url: str) -> None:
                try:
                    attacker.store_oauth(url)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (url, error.code(), error.details())
                    seen["refused"] += 1
                    return
                seen["accepted"] += 1
                code, details, _ = attacker.resolve()
                assert code not in crashes, (url, code, details)
                seen["codes"][code] = seen["codes"].get(code, 0) + 1
                try:
                    attacker.config.TestSmtp(v2.TestSmtpRequest(test_recipient="ops@example.org"), timeout=20)
                except grpc.RpcError as error:
                    assert error.code().name not in crashes, (url, error.code(), error.details())

            accepted_endpoints_never_crash()
        finally:
            attacker.close()
    return seen


def test_every_token_endpoint_validation_accepts_resolves_or_fails_cleanly() -> None:
    import os

    examples = int(os.environ.get("SMTPCONFIG_FUZZ_EXAMPLES", "150"))
    seen = netns.run(_token_endpoint_property, examples, addresses=(METADATA,),
                     names={"idp.test": [["127.0.0.1"]]}, timeout=600)
    # The generator must reach both sides of validation, and real token fetches.
    assert seen["accepted"] > 10 and seen["refused"] > 10 and seen["codes"].get("OK", 0) > 0, seen
