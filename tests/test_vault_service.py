"""The Vault provider through the running service, against a real OpenBao: references in the
profile, CheckSecret, the engine's cache and single flight, outages and recovery, and secrets."""

from __future__ import annotations

import base64
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smtpconfig.api.auth import token_hash
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.fakevault import FakeVault
from tests.kits.openbao import OpenBao
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.providers import check, fingerprint_of, vault_instance
from tests.kits.support import ServerProcess, ServerThread, short_dir, token_channel


@pytest.fixture
def service():
    data_dir = short_dir()
    server = ServerThread(data_dir, provider_timeout=2.0, provider_failure_ttl=0.5).start()
    with server.channel() as channel:
        yield pb_grpc.SecretProviderServiceStub(channel), v2_grpc.ConfigServiceStub(channel), channel
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_profile_reference_resolves_from_vault(service, openbao_server: OpenBao) -> None:
    providers, config, _ = service
    openbao_server.kv_put("secret", "svc/profile", {"username": "relay", "password": "from-bao-1"})
    vault = vault_instance(providers, openbao_server)
    doc = edit(BASIC_V2,
               RelayUsername={"Provider": vault, "Parameters": {"Secret": "svc/profile", "Key": "username"}},
               RelayPassword={"Provider": vault, "Parameters": {"SecretPath": "svc/profile", "Field": "password"}})
    stored = config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc))).profile
    # Aliases are stored under the canonical (Keyfactor) names.
    assert dict(stored.relay_password.parameters) == {"Secret": "svc/profile", "Key": "password"}
    reply = providers.CheckSecret(pb.CheckSecretRequest(profile_field="RelayPassword"))
    assert reply.provider_type == "vault" and reply.version == "1"
    assert reply.fingerprint == fingerprint_of(providers, "from-bao-1")


def test_two_hundred_concurrent_checks_cause_one_backend_read(service, openbao_server: OpenBao) -> None:
    providers, _, _ = service
    openbao_server.kv_put("secret", "svc/herd", {"password": "herd-value"})
    vault = vault_instance(providers, openbao_server)
    before = openbao_server.count_reads("secret/data/svc/herd")
    with ThreadPoolExecutor(max_workers=200) as pool:
        replies = list(pool.map(lambda _: check(providers, vault, Secret="svc/herd", Key="password"), range(200)))
    assert len({r.fingerprint for r in replies}) == 1
    assert openbao_server.count_reads("secret/data/svc/herd") - before == 1


def test_rotated_secret_is_seen_after_the_ttl_and_not_before(service, openbao_server: OpenBao) -> None:
    providers, _, _ = service
    openbao_server.kv_put("secret", "svc/rotate", {"password": "old-value"})
    vault = vault_instance(providers, openbao_server, TtlSeconds="2")
    old = check(providers, vault, Secret="svc/rotate", Key="password")
    openbao_server.kv_put("secret", "svc/rotate", {"password": "new-value"})
    again = check(providers, vault, Secret="svc/rotate", Key="password")
    assert again.cached and again.fingerprint == old.fingerprint  # within the TTL: the cached value
    time.sleep(2.2)
    fresh = check(providers, vault, Secret="svc/rotate", Key="password")
    assert not fresh.cached and fresh.fingerprint == fingerprint_of(providers, "new-value")
    assert fresh.version == "2"


def test_missing_key_is_failed_precondition_naming_the_reference(service, openbao_server: OpenBao) -> None:
    providers, _, _ = service
    openbao_server.kv_put("secret", "svc/partial", {"password": "x"})
    vault = vault_instance(providers, openbao_server)
    with pytest.raises(grpc.RpcError) as failure:
        check(providers, vault, Secret="svc/partial", Key="nope")
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Key=nope" in failure.value.details() and "Secret=svc/partial" in failure.value.details()


def test_outage_is_unavailable_within_the_timeout_and_recovers_without_a_restart(service, tmp_path: Path) -> None:
    providers, _, channel = service
    bao = OpenBao(tmp_path, audit=False).start()
    try:
        bao.kv_put("secret", "svc/outage", {"password": "still-here"})
        vault = vault_instance(providers, bao, TtlSeconds="0")
        assert check(providers, vault, Secret="svc/outage", Key="password").success
        health = health_pb2_grpc.HealthStub(channel)

        bao.stop()  # connection refused
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as down:
            check(providers, vault, Secret="svc/outage", Key="password")
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 3
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

        bao.start()
        time.sleep(0.6)  # past the failure TTL
        bao.pause()  # accepts connections, never answers: only the timeout ends the call
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as hung:
            check(providers, vault, Secret="svc/outage", Key="password")
        assert hung.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 3.5
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

        bao.resume()
        time.sleep(0.6)
        recovered = check(providers, vault, Secret="svc/outage", Key="password")
        assert recovered.success and recovered.fingerprint == fingerprint_of(providers, "still-here")
    finally:
        bao.stop()


def test_planted_vault_secrets_stay_inside(openbao_server: OpenBao) -> None:
    value = "PLANTED-bao-value-77aa"
    openbao_server.write_policy("svc-read", 'path "secret/data/svc/*" { capabilities = ["read"] }')
    role = openbao_server.create_approle("svc-role", ["svc-read"])
    token = openbao_server.create_token(["svc-read"])
    openbao_server.kv_put("secret", "svc/planted", {"password": value})
    planted = [value, role.secret_id, token, openbao_server.root_token]

    base = short_dir()
    server = ServerProcess(base / "data", "--log-level", "debug").start()
    seen: list[str | bytes] = []
    try:
        with server.channel() as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)
            config = v2_grpc.ConfigServiceStub(channel)
            by_token = vault_instance(stub, openbao_server, name="by-token", Token=token)
            by_role = vault_instance(stub, openbao_server, name="by-role", Token="", AuthMethod="approle",
                                     RoleId=role.role_id, SecretId=role.secret_id)
            for provider in (by_token, by_role):
                seen.append(str(check(stub, provider, Secret="svc/planted", Key="password")))
                seen.append(str(stub.GetProvider(pb.GetProviderRequest(id=provider))))
            seen.append(str(stub.ListProviders(pb.ListProvidersRequest())))
            doc = edit(BASIC_V2, RelayPassword={"Provider": by_role, "Parameters": {"Secret": "svc/planted", "Key": "password"}})
            seen.append(str(config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)))))
            seen.append(str(config.GetSmtp(v2.GetSmtpRequest())))
            for params in ({"Secret": "svc/planted", "Key": "missing"}, {"Secret": "svc/absent", "Key": "password"}):
                with pytest.raises(grpc.RpcError) as failure:
                    check(stub, by_role, **params)
                seen += [failure.value.details(), repr(failure.value)]
            bad = vault_instance(stub, openbao_server, name="bad-role", Token="", AuthMethod="approle",
                                 RoleId=role.role_id, SecretId=role.secret_id + "x")
            with pytest.raises(grpc.RpcError) as denied:
                check(stub, bad, Secret="svc/planted", Key="password")
            assert denied.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            seen += [denied.value.details(), repr(denied.value)]
    finally:
        server.terminate()
    seen.append(server.log())
    seen += [p.read_bytes() for p in (base / "data").iterdir() if p.is_file()]
    for item in seen:
        blob = item if isinstance(item, bytes) else item.encode()
        for secret in planted:
            assert secret.encode() not in blob
    shutil.rmtree(base, ignore_errors=True)


def test_an_instance_setting_that_cannot_work_is_failed_precondition_naming_the_instance(
    openbao_server: OpenBao,
) -> None:
    """The operator's JwtFile is missing: the app that resolves sent no parameters and can fix
    nothing, so it hears FAILED_PRECONDITION naming the instance, not INVALID_ARGUMENT. A bad
    parameter of the reference itself is INVALID_ARGUMENT naming it."""
    root = short_dir()
    declared = {"id": 3, "name": "vault-jwt", "type": "vault", "initialization": {
        "Host": openbao_server.address, "AuthMethod": "jwt", "Role": "smtp", "JwtFile": str(root / "absent-token"),
    }}
    server = ServerThread(root / "data", providers=(declared,), provider_failure_ttl=0.1).start()
    try:
        with server.channel() as channel:
            providers, config = pb_grpc.SecretProviderServiceStub(channel), v2_grpc.ConfigServiceStub(channel)
            reference = {"Provider": 3, "Parameters": {"Secret": "svc/smtp", "Key": "password"}}
            config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=reference))))
            for call in (lambda: config.ResolveSmtp(v2.ResolveSmtpRequest()),
                         lambda: providers.CheckSecret(pb.CheckSecretRequest(profile_field="RelayPassword"))):
                with pytest.raises(grpc.RpcError) as failure:
                    call()
                assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION, failure.value.details()
                details = failure.value.details()
                assert "provider 3 (vault-jwt, vault)" in details and "JwtFile" in details, details
                assert violations_of(failure.value) == []

            with pytest.raises(grpc.RpcError) as failure:
                check(providers, 3, Secret="svc/smtp", Key="password", Version="latest")
            # Read by its kind (a whole number from 1) before any resolution.
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert violations_of(failure.value) == [("Secret.Parameters.Version", "must be a whole number")]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def violations_of(error: grpc.RpcError) -> list[tuple[str, str]]:
    from tests.kits.support import violations

    try:
        return violations(error)
    except AssertionError:  # no rich status at all: no BadRequest either
        return []


# --- credentials the provider obtains at run time ----------------------------------------------

LOGIN_TOKEN = "PLANTED-login-token-c41d9e"
JWT = "PLANTED.jwt-from-file.7b2f0a"
ECHOER = "echoer-" + "e" * 40


def _echoed_and_recorded(tmp_path: Path, echo: str, **init: str) -> tuple[str, str, bytes]:
    """CheckSecret, as an identity holding only providers:modify and providers:read, on a Vault
    that echoes a credential in its error: (status and details, server log at debug, data files)."""
    config = tmp_path / "smtpconfig.toml"
    config.write_text(f'log_level = "debug"\npath_directories = ["{tmp_path}"]\n'
                      f'[[tokens]]\nidentity = "echoer"\nsha256 = "{token_hash(ECHOER)}"\n'
                      '[policy]\nechoer = ["providers:modify", "providers:read"]\n')
    base = short_dir()
    server = ServerProcess(base / "data", "--config", str(config)).start()
    try:
        with FakeVault({"smtp/relay": {"password": "unused"}}, login_token=LOGIN_TOKEN, echo=echo) as vault:
            with token_channel(server.target, ECHOER) as channel:
                stub = pb_grpc.SecretProviderServiceStub(channel)
                instance = pb.ProviderInstance(name="echoing", provider_type="vault")
                for key, value in {"Host": f"http://127.0.0.1:{vault.port}", **init}.items():
                    instance.initialization[key].value = value
                provider = stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider.id
                with pytest.raises(grpc.RpcError) as failure:
                    check(stub, provider, Secret="smtp/relay", Key="password")
                shown = f"{failure.value.code().name} {failure.value.details()} {failure.value!r}"
    finally:
        server.terminate()
    files = b"".join(p.read_bytes() for p in (base / "data").rglob("*") if p.is_file())
    log = server.log()
    shutil.rmtree(base, ignore_errors=True)
    return shown, log, files


def _forms(credential: str) -> list[bytes]:
    return [credential.encode(), credential.upper().encode(), base64.b64encode(credential.encode())]


@pytest.mark.parametrize("login", [
    {"AuthMethod": "approle", "RoleId": "role", "SecretId": "PLANTED-secret-id-0d3e"},
    {"AuthMethod": "jwt", "Role": "smtp", "Jwt": JWT},
], ids=["approle", "jwt"])
def test_a_token_a_login_returned_is_masked_where_vault_echoes_it(tmp_path: Path, login: dict[str, str]) -> None:
    shown, log, files = _echoed_and_recorded(tmp_path, "token", **login)
    assert "FAILED_PRECONDITION" in shown and "permission denied for token" in shown, shown
    assert "**********" in shown and "(as **********, as **********)" in shown, shown
    assert "permission denied for token" in log, "the log line quoting Vault's answer is the one searched"
    for item in (shown.encode(), log.encode(), files):
        for form in _forms(LOGIN_TOKEN):
            assert form not in item


def test_the_jwt_read_from_jwt_file_is_masked_where_vault_echoes_it(tmp_path: Path) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text(JWT + "\n")
    shown, log, files = _echoed_and_recorded(tmp_path, "jwt", AuthMethod="jwt", Role="smtp", JwtFile=str(jwt_file))
    assert "FAILED_PRECONDITION" in shown and "invalid jwt" in shown, shown
    assert "(as **********, as **********)" in shown, shown
    for item in (shown.encode(), log.encode(), files):
        for form in _forms(JWT):
            assert form not in item
