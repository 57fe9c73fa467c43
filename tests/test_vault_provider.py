"""The Vault provider against a real OpenBao (tests/kits/openbao.py): reads, logins, errors, secrecy.

`resolve` is called directly; the service's cache and gRPC layer are not involved.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpconfig.plugin import AccessDenied, BadParameters, ProviderUnavailable, Resolved, Secret, SecretNotFound
from smtpconfig.plugin.testing import (
    ProviderConformance,
    call_resolve,
    prepare_initialization,
    prepare_parameters,
    resolve_as_host,
)
from smtpconfig.providers.vault import VaultProvider, register_secret_providers
from tests.kits.openbao import AppRole, JwtIssuer, OpenBao

VALUE = "PLANTED-vault-välue-5e1f"
OLD_VALUE = "PLANTED-old-value-0a9c"
KV1_VALUE = "PLANTED-kv1-value-77d2"
NS_VALUE = "PLANTED-namespaced-value-b3c4"
WRONG_TOKEN = "s.PLANTED-wrong-token-d00d"
TIMEOUT = 2.0

READER = """
path "secret/data/smtp/*" { capabilities = ["read"] }
path "kv1/smtp/*" { capabilities = ["read"] }
"""


@dataclass
class Seed:
    server: OpenBao
    reader_token: str
    approle: AppRole  # token_ttl 1h
    short: AppRole  # token_ttl 3s
    revocable: AppRole  # its own mount, so its tokens can be revoked alone
    many: AppRole  # its own mount, for counting logins
    ns_approle: AppRole  # in namespace team-a
    issuer: JwtIssuer

    def planted(self) -> tuple[str, ...]:
        return (VALUE, OLD_VALUE, KV1_VALUE, NS_VALUE, WRONG_TOKEN, self.server.root_token, self.reader_token,
                *(r.secret_id for r in (self.approle, self.short, self.revocable, self.many, self.ns_approle)))

    def token(self, **extra: str) -> dict[str, Any]:
        return {"Host": self.server.address, "Token": Secret(self.reader_token), **extra}

    def role(self, approle: AppRole, **extra: str) -> dict[str, Any]:
        return {"Host": self.server.address, "AuthMethod": "approle", "RoleId": approle.role_id,
                "SecretId": Secret(approle.secret_id), "AuthMount": approle.mount, **extra}


@pytest.fixture(scope="module")
def seed(openbao_server: OpenBao) -> Seed:
    bao = openbao_server
    bao.kv_put("secret", "smtp/relay", {"password": OLD_VALUE})
    bao.kv_put("secret", "smtp/relay", {"password": VALUE, "user": "relay", "port": 587, "tls": True,
                                        "extra": {"hosts": ["a", "b"]}, "empty": None})
    bao.kv_put("secret", "denied/relay", {"password": VALUE})
    bao.enable_kv("kv1", 1)
    bao.kv1_put("kv1", "smtp/relay", {"password": KV1_VALUE})
    bao.kv1_put("kv1", "smtp/short", {"password": KV1_VALUE, "ttl": "42s"})
    bao.write_policy("smtp-reader", READER)
    bao.create_namespace("team-a")
    bao.enable_kv("kv", 2, namespace="team-a")
    bao.kv_put("kv", "smtp/relay", {"password": NS_VALUE}, namespace="team-a")
    bao.write_policy("smtp-reader", 'path "kv/data/smtp/*" { capabilities = ["read"] }', namespace="team-a")
    return Seed(
        server=bao,
        reader_token=bao.create_token(["smtp-reader"]),
        approle=bao.create_approle("smtp", ["smtp-reader"]),
        short=bao.create_approle("smtp", ["smtp-reader"], token_ttl="3s", mount="approle-short"),
        revocable=bao.create_approle("smtp", ["smtp-reader"], mount="approle-revocable"),
        many=bao.create_approle("smtp", ["smtp-reader"], mount="approle-many"),
        ns_approle=bao.create_approle("smtp", ["smtp-reader"], mount="approle-ns", namespace="team-a"),
        issuer=bao.create_jwt_role("smtp", ["smtp-reader"]),
    )


@pytest.fixture
def provider() -> Any:
    p = VaultProvider(timeout=TIMEOUT)
    yield p
    p.close()


RELAY = {"Secret": "smtp/relay", "Key": "password"}


class TestVaultConformance(ProviderConformance):
    """The project's provider conformance kit, with AppRole login, against the real OpenBao."""

    provider_class = VaultProvider
    timeout = TIMEOUT

    @pytest.fixture(autouse=True)
    def _server(self, seed: Seed) -> Any:
        self.seed = seed
        yield
        seed.server.resume()  # after slow()

    def initialization(self) -> dict[str, str]:
        approle = self.seed.approle
        return {"Host": self.seed.server.address, "AuthMethod": "approle", "RoleId": approle.role_id,
                "SecretId": approle.secret_id}

    def existing(self) -> tuple[dict[str, str], str]:
        return RELAY, VALUE

    def missing(self) -> dict[str, str]:
        return {"Secret": "smtp/nothing", "Key": "password"}

    def slow(self) -> dict[str, str]:
        self.seed.server.pause()  # a hung Vault: connections accepted, never answered
        return RELAY

    def planted(self) -> list[str]:
        return list(self.seed.planted())


def test_registers_the_vault_type_with_keyfactor_names_canonical() -> None:
    registered: list[type] = []
    register_secret_providers(register=registered.append)
    assert registered == [VaultProvider] and VaultProvider.name == "vault"
    table = {p.name: (p.instance_level, p.data_type, p.required, p.aliases) for p in VaultProvider.parameters}
    assert table["Host"] == (False, "string", True, ("Url", "Address"))
    assert table["Token"] == (False, "secret", False, ())
    assert table["Path"] == (False, "string", False, ("Mount",))
    assert table["Secret"] == (True, "string", True, ("SecretPath",))
    assert table["Key"] == (True, "string", True, ("Field",))
    assert {n for n, (_, kind, _, _) in table.items() if kind == "secret"} == {"Token", "SecretId", "Jwt"}


# (case, initialization changes, instance parameters, value, version, ttl)
READS = [
    ("KV v2 latest version", {}, RELAY, VALUE, "2", None),
    ("KV v2 version pinned", {}, {**RELAY, "Version": "1"}, OLD_VALUE, "1", None),
    ("KV v1: its 768h default lease leaves the default TTL", {"Path": "kv1", "KvVersion": "1"}, RELAY,
     KV1_VALUE, None, None),
    ("KV v1: a lease shorter than the default TTL is the TTL", {"Path": "kv1", "KvVersion": "1"},
     {"Secret": "smtp/short", "Key": "password"}, KV1_VALUE, None, 42.0),
    ("Keyfactor's default Path v1/secret/data", {"Path": "v1/secret/data"}, RELAY, VALUE, "2", None),
    ("Keyfactor's v1/{mount} form means KV v1", {"Path": "v1/kv1"}, RELAY, KV1_VALUE, None, None),
    ("our aliases Url, Mount, SecretPath, Field", {"Url": "HOST", "Mount": "secret/data"},
     {"SecretPath": "smtp/relay", "Field": "password"}, VALUE, "2", None),
    ("a number is converted with str()", {}, {**RELAY, "Key": "port"}, "587", "2", None),
    ("a boolean is converted with str()", {}, {**RELAY, "Key": "tls"}, "True", "2", None),
    ("an object becomes compact JSON", {}, {**RELAY, "Key": "extra"}, '{"hosts":["a","b"]}', "2", None),
    ("namespace from the Namespace parameter", {"Namespace": "team-a", "Path": "kv", "Token": "ROOT"}, RELAY,
     NS_VALUE, "1", None),
    ("namespace inside Keyfactor's v1/{namespace}/{mount}/data", {"Path": "v1/team-a/kv/data", "Token": "ROOT"},
     RELAY, NS_VALUE, "1", None),
]


@pytest.mark.parametrize("case, changes, instance, value, version, ttl", READS, ids=[r[0] for r in READS])
def test_reads(seed: Seed, provider: VaultProvider, case, changes, instance, value, version, ttl) -> None:
    init = seed.token(**changes)
    if "Url" in changes:
        init["Url"] = init.pop("Host")
    if changes.get("Token") == "ROOT":
        init["Token"] = Secret(seed.server.root_token)
    resolved = resolve_as_host(provider, instance, init)
    assert isinstance(resolved, Resolved)
    assert (resolved.value.reveal(), resolved.version, resolved.ttl, resolved.lease_id) == (value, version, ttl, None)


# (case, initialization from the seed, value, expected login mount)
LOGINS: list[tuple[str, Callable[[Seed, Path], dict[str, Any]], str]] = [
    ("AppRole", lambda s, _: s.role(s.approle), VALUE),
    ("JWT given as a string", lambda s, _: {"Host": s.server.address, "AuthMethod": "jwt", "Role": "smtp",
                                           "Jwt": Secret(s.issuer.mint())}, VALUE),
    ("JWT read from JwtFile", lambda s, tmp: {"Host": s.server.address, "AuthMethod": "JWT", "Role": "smtp",
                                             "JwtFile": str(_jwt_file(tmp, s.issuer.mint() + "\n"))}, VALUE),
    ("AppRole inside a namespace", lambda s, _: s.role(s.ns_approle, Namespace="team-a", Path="kv"), NS_VALUE),
]


def _jwt_file(directory: Path, text: str) -> Path:
    path = directory / "token"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, make_init, value", LOGINS, ids=[c[0] for c in LOGINS])
def test_logins(seed: Seed, provider: VaultProvider, tmp_path: Path, case, make_init, value) -> None:
    init = make_init(seed, tmp_path)
    for _ in range(3):
        assert resolve_as_host(provider, RELAY, init).value.reveal() == value
    assert provider.logins == 1, "one login serves many reads"


def test_tls_with_the_ca_bundle_and_refused_without(seed: Seed, provider: VaultProvider) -> None:
    bao = seed.server
    assert bao.tls_address and bao.ca_file
    for host in (bao.tls_address, bao.tls_address.replace("127.0.0.1", "localhost")):
        init = seed.token(Host=host, CaBundle=str(bao.ca_file))
        assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    with pytest.raises(ProviderUnavailable, match="certificate verification failed") as caught:
        resolve_as_host(VaultProvider(timeout=TIMEOUT), RELAY, seed.token(Host=bao.tls_address))
    assert "CaBundle" in str(caught.value)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_reads_after_the_first_go_out_on_the_event_loop_over_one_kept_alive_connection(
    seed: Seed, provider: VaultProvider, tls: bool
) -> None:
    bao = seed.server
    init = seed.token(Host=bao.tls_address, CaBundle=str(bao.ca_file)) if tls else seed.token()
    reads = bao.count_reads("secret/data/smtp/relay")
    assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE  # through hvac: no client yet
    assert provider.loop_reads == 0
    params, prepared = prepare_parameters(VaultProvider, RELAY), prepare_initialization(VaultProvider, init)
    versioned = prepare_parameters(VaultProvider, {**RELAY, "Version": "1"})

    async def three() -> list[Resolved]:
        return [await provider.resolve(params, prepared), await provider.resolve(versioned, prepared),
                await provider.resolve(params, prepared)]

    got = asyncio.run(three())
    assert [r.value.reveal() for r in got] == [VALUE, OLD_VALUE, VALUE]
    assert [r.version for r in got] == ["2", "1", "2"]
    assert provider.loop_reads == 3
    assert provider._connection is not None and provider._connection.reader.opened == 1, "one connection, kept alive"
    assert bao.count_reads("secret/data/smtp/relay") == reads + 4, "every resolve reads Vault"


def _times_out_while_paused(seed: Seed, provider: VaultProvider) -> None:
    """A server that accepts and never answers: the provider's own timeout ends the read (it is
    called directly, so not the host's timeout of the same length), within TIMEOUT and a margin."""
    seed.server.pause()
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailable, match="no answer"):
            call_resolve(provider, prepare_parameters(VaultProvider, RELAY), prepare_initialization(VaultProvider, seed.token()))
    finally:
        seed.server.resume()
    assert time.monotonic() - started < TIMEOUT + 1


def test_a_hung_server_times_out_on_the_event_loop_too(seed: Seed, provider: VaultProvider) -> None:
    assert resolve_as_host(provider, RELAY, seed.token()).value.reveal() == VALUE
    _times_out_while_paused(seed, provider)
    assert resolve_as_host(provider, RELAY, seed.token()).value.reveal() == VALUE
    assert provider.loop_reads == 1


def test_a_rotated_secret_is_read_fresh_on_every_resolve(seed: Seed, provider: VaultProvider) -> None:
    bao, reference = seed.server, {"Secret": "smtp/rotating", "Key": "password"}
    reads = bao.count_reads("secret/data/smtp/rotating")
    for n in range(1, 4):
        version = bao.kv_put("secret", "smtp/rotating", {"password": f"rotation-{n}"})
        resolved = resolve_as_host(provider, reference, seed.token())
        assert (resolved.value.reveal(), resolved.version) == (f"rotation-{n}", str(version))
    assert bao.count_reads("secret/data/smtp/rotating") == reads + 3, "the provider keeps no cache"


def test_an_expiring_approle_token_is_replaced_before_any_call_fails(
    seed: Seed, provider: VaultProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpconfig.providers.vault")
    logins = seed.server.count_requests("auth/approle-short/login")
    init = seed.role(seed.short)
    deadline = time.monotonic() + 4.8  # the token lives 3 s: due for a new login after 2.25 s
    while time.monotonic() < deadline:
        assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
        time.sleep(0.1)
    assert provider.logins >= 2
    assert seed.server.count_requests("auth/approle-short/login") - logins == provider.logins
    assert "logging in again" not in caplog.text, "a read was refused before the token was replaced"


def test_a_revoked_token_costs_one_new_login_and_no_failed_call(seed: Seed, provider: VaultProvider) -> None:
    init = seed.role(seed.revocable)
    assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    seed.server.revoke_logins(seed.revocable.mount)
    assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    assert provider.logins == 2
    # A path the role may not read: one new login, one retry, then AccessDenied.
    with pytest.raises(AccessDenied, match="permission denied"):
        resolve_as_host(provider, {"Secret": "denied/relay", "Key": "password"}, init)
    assert provider.logins == 3


def test_jwt_file_is_read_again_at_every_login(seed: Seed, provider: VaultProvider, tmp_path: Path) -> None:
    jwt_file = _jwt_file(tmp_path, seed.issuer.mint())
    init = {"Host": seed.server.address, "AuthMethod": "jwt", "Role": "smtp", "JwtFile": str(jwt_file)}
    assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    _jwt_file(tmp_path, "not-a-jwt")
    seed.server.revoke_logins(seed.issuer.mount)
    with pytest.raises(AccessDenied, match="jwt login"):
        resolve_as_host(provider, RELAY, init)
    _jwt_file(tmp_path, seed.issuer.mint())
    assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE


# (case, initialization from the seed, instance parameters, error, text the message names)
FAILURES: list[tuple[str, Callable[[Seed], dict[str, Any]], dict[str, str], type, str]] = [
    ("missing path", lambda s: s.token(), {"Secret": "smtp/nothing", "Key": "password"}, SecretNotFound,
     "'smtp/nothing'"),
    ("missing key", lambda s: s.token(), {**RELAY, "Key": "nokey"}, SecretNotFound, "'nokey'"),
    ("null value", lambda s: s.token(), {**RELAY, "Key": "empty"}, SecretNotFound, "'empty'"),
    ("missing mount", lambda s: s.token(Token=Secret(s.server.root_token), Path="nomount"), RELAY,
     SecretNotFound, "'nomount'"),
    ("missing version", lambda s: s.token(), {**RELAY, "Version": "99"}, SecretNotFound, "version 99"),
    ("wrong token", lambda s: s.token(Token=Secret(WRONG_TOKEN)), RELAY, AccessDenied, "permission denied"),
    ("policy does not allow the path", lambda s: s.token(), {"Secret": "denied/relay", "Key": "password"},
     AccessDenied, "'denied/relay'"),
    ("wrong AppRole secret_id", lambda s: s.role(s.approle, SecretId=Secret(s.many.secret_id)), RELAY,
     AccessDenied, "approle login"),
    ("JWT for another audience", lambda s: {"Host": s.server.address, "AuthMethod": "jwt", "Role": "smtp",
                                           "Jwt": Secret(_foreign_jwt(s.issuer))}, RELAY, AccessDenied, "jwt login"),
    ("nothing listens on the port", lambda s: s.token(Host="http://127.0.0.1:9"), RELAY, ProviderUnavailable,
     "cannot connect"),
    # https:// is assumed without a scheme; the fixture's first listener speaks plain HTTP, as a dev server does.
    ("a Host without a scheme at a plain-HTTP Vault", lambda s: s.token(Host=s.server.address.removeprefix("http://")),
     RELAY, ProviderUnavailable, "plain HTTP; if this Vault serves plain HTTP (a dev server), set Host to http://127.0.0.1:"),
]


def _foreign_jwt(issuer: JwtIssuer) -> str:
    return JwtIssuer(issuer.mount, issuer.role, "someone-else", issuer.private_key).mint()


@pytest.mark.parametrize("case, make_init, instance, error, named", FAILURES, ids=[f[0] for f in FAILURES])
def test_errors_are_mapped(seed: Seed, provider: VaultProvider, case, make_init, instance, error, named) -> None:
    with pytest.raises(error) as caught:
        resolve_as_host(provider, instance, make_init(seed))
    assert named in str(caught.value)
    _assert_clean(seed, str(caught.value), repr(caught.value), *traceback.format_exception(caught.value))


@pytest.mark.parametrize("case, make_init, instance, error, named", FAILURES[:7], ids=[f[0] for f in FAILURES[:7]])
def test_a_failing_read_says_the_same_once_the_client_exists(
    seed: Seed, provider: VaultProvider, case, make_init, instance, error, named
) -> None:
    """Only a 200 is used on the event loop; any other answer is read again through hvac, so the
    error is the one the first call (through hvac from the start) gave; so is a 200 without the key."""
    messages = []
    for _ in range(2):
        with pytest.raises(error) as caught:
            resolve_as_host(provider, instance, make_init(seed))
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and named in messages[1]


# (case, initialization changes, instance changes, parameter the error names)
BAD = [
    ("no Host", {"Host": ""}, {}, "Host"),
    ("Host is not http(s)", {"Host": "ftp://vault:21"}, {}, "Host"),
    ("unknown AuthMethod", {"AuthMethod": "kerberos"}, {}, "AuthMethod"),
    ("token auth without Token", {"Token": ""}, {}, "Token"),
    ("approle without RoleId", {"AuthMethod": "approle", "Token": "", "SecretId": "x"}, {}, "RoleId"),
    ("approle without SecretId", {"AuthMethod": "approle", "Token": "", "RoleId": "x"}, {}, "SecretId"),
    ("approle with a Token too", {"AuthMethod": "approle", "RoleId": "x", "SecretId": "y"}, {}, "Token"),
    ("jwt without Role", {"AuthMethod": "jwt", "Token": "", "Jwt": "x"}, {}, "Role"),
    ("jwt without Jwt or JwtFile", {"AuthMethod": "jwt", "Token": "", "Role": "r"}, {}, "Jwt"),
    ("jwt with both Jwt and JwtFile", {"AuthMethod": "jwt", "Token": "", "Role": "r", "Jwt": "x",
                                       "JwtFile": "/f"}, {}, "JwtFile"),
    ("JwtFile that does not exist", {"AuthMethod": "jwt", "Token": "", "Role": "r", "JwtFile": "/nonexistent/t"},
     {}, "JwtFile"),
    ("KvVersion 3", {"KvVersion": "3"}, {}, "KvVersion"),
    ("KvVersion 1 with a /data Path", {"Path": "v1/secret/data", "KvVersion": "1"}, {}, "KvVersion"),
    ("Path names no mount", {"Path": "v1/"}, {}, "Path"),
    ("Version with KV v1", {"Path": "kv1", "KvVersion": "1"}, {"Version": "2"}, "Version"),
    ("Version not a number", {}, {"Version": "latest"}, "Version"),
    ("Version 0", {}, {"Version": "0"}, "Version"),
    ("no Secret", {}, {"Secret": ""}, "Secret"),
    ("no Key", {}, {"Key": ""}, "Key"),
    ("CaBundle that does not exist", {"CaBundle": "/nonexistent/ca.pem"}, {}, "CaBundle"),
]


@pytest.mark.parametrize("case, init_changes, instance_changes, parameter", BAD, ids=[b[0] for b in BAD])
def test_impossible_parameters_name_the_culprit(seed: Seed, case, init_changes, instance_changes, parameter) -> None:
    init = {k: v for k, v in seed.token(**init_changes).items() if v != ""}
    reads = seed.server.count_requests("")
    with pytest.raises(BadParameters) as caught:
        resolve_as_host(VaultProvider(timeout=TIMEOUT), {**RELAY, **instance_changes}, init)
    assert caught.value.parameter == parameter
    assert seed.server.count_requests("") == reads, "refused before any request"
    _assert_clean(seed, str(caught.value))


def test_stopped_server_is_unavailable_within_the_timeout_then_the_same_provider_recovers(seed: Seed) -> None:
    by_token, by_role = VaultProvider(timeout=TIMEOUT), VaultProvider(timeout=TIMEOUT)
    inits = {by_token: seed.token(), by_role: seed.role(seed.approle)}
    for provider, init in inits.items():
        assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    seed.server.stop()
    try:
        for provider, init in inits.items():
            started = time.monotonic()
            with pytest.raises(ProviderUnavailable, match="cannot connect"):
                resolve_as_host(provider, RELAY, init)
            assert time.monotonic() - started < TIMEOUT
    finally:
        seed.server.start()
    for provider, init in inits.items():
        assert resolve_as_host(provider, RELAY, init).value.reveal() == VALUE
    assert by_role.logins == 1, "the AppRole token survived the restart"
    by_token.close(), by_role.close()


def test_a_hung_server_times_out_and_a_sealed_one_is_unavailable(seed: Seed, provider: VaultProvider) -> None:
    _times_out_while_paused(seed, provider)
    seed.server.seal()
    try:
        with pytest.raises(ProviderUnavailable, match="sealed"):
            resolve_as_host(provider, RELAY, seed.token())
    finally:
        seed.server.unseal()
    assert resolve_as_host(provider, RELAY, seed.token()).value.reveal() == VALUE


def test_fifty_concurrent_resolutions_share_one_login_and_get_their_own_values(seed: Seed) -> None:
    provider = VaultProvider(timeout=TIMEOUT)
    logins = seed.server.count_requests("auth/approle-many/login")
    wanted = [({**RELAY, "Version": "1"}, OLD_VALUE), (RELAY, VALUE), ({**RELAY, "Key": "user"}, "relay"),
              ({**RELAY, "Key": "port"}, "587")]
    init, start = seed.role(seed.many), threading.Barrier(50)

    def one(n: int) -> tuple[str, str]:
        instance, value = wanted[n % len(wanted)]
        start.wait()
        return resolve_as_host(provider, instance, init).value.reveal(), value

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert all(got == expected for got, expected in results)
    assert provider.logins == 1
    provider.close()
    assert seed.server.count_requests("auth/approle-many/login") - logins == 1


def test_secrets_never_appear_in_repr_messages_or_logs(
    seed: Seed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    jwt = seed.issuer.mint()
    seen: list[str] = []
    inits = [seed.token(), seed.role(seed.approle), seed.role(seed.approle, SecretId=Secret(seed.many.secret_id)),
             {"Host": seed.server.address, "AuthMethod": "jwt", "Role": "smtp", "Jwt": Secret(jwt)},
             seed.token(Token=Secret(WRONG_TOKEN)), seed.token(Host=seed.server.tls_address),
             seed.token(Token=seed.reader_token, KvVersion="9")]
    instances = [RELAY, {**RELAY, "Key": "nokey"}, {"Secret": "denied/relay", "Key": "password"}]
    for init in inits:
        provider = VaultProvider(timeout=TIMEOUT)
        for instance in instances:
            try:
                seen.append(repr(resolve_as_host(provider, instance, init)))
            except Exception as error:  # every kind the provider raises
                seen += [str(error), repr(error), *traceback.format_exception(error)]
        seen.append(repr(provider))
        provider.close()
    assert len(seen) > 20
    _assert_clean(seed, caplog.text, *seen, extra=(jwt,))


def _assert_clean(seed: Seed, *texts: str, extra: tuple[str, ...] = ()) -> None:
    for text in texts:
        for secret in (*seed.planted(), *extra):
            assert secret not in text, f"a planted secret leaked into: {text[:200]}"
