"""SecretProviderService over a real channel: instances, references, CheckSecret and the engine.

The backend here is the first-party `exec` provider running real scripts, which lets a test count
backend calls exactly (each call appends a line to a file) and make a backend slow or broken.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.profiles import BASIC_V2, as_json, edit, v2_profile
from tests.kits.support import ServerThread, short_dir, violations

PLANTED_TOKEN = "PLANTED-exec-token-5e1f"


def script(directory: Path, name: str, body: str) -> str:
    """A Python script printing secrets by name; `calls` counts its runs."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def backend(tmp_path: Path) -> Path:
    calls = tmp_path / "calls"
    script(tmp_path, "vendor-cli", f"""
name = os.environ["SMTPCONFIG_SECRET_NAME"]
with open({str(calls)!r}, "a") as f:
    f.write(name + "\\n")
time.sleep(float(os.environ.get("VENDOR_DELAY", "0") or 0))
secrets = {{"smtp-password": "s3cret-from-vendor", "smtp-user": "relay-user"}}
if name == "explode":
    print("PLANTED-stdout-of-failure"); print("vendor: backend offline", file=sys.stderr); sys.exit(3)
if name not in secrets:
    sys.exit(0)  # prints nothing: not found
print(secrets[name])
""")
    return tmp_path


def count_calls(backend: Path, name: str | None = None) -> int:
    path = backend / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return len([line for line in lines if name is None or line == name])


@pytest.fixture
def server_fast_failures(backend: Path):
    data_dir = short_dir()
    # The operator lets API-made exec instances run the vendor CLI (and nothing else) with its
    # VENDOR_DELAY set, and lets one identity have 200 calls at once (the coalescing test sends
    # that many as the admin).
    server = ServerThread(data_dir, provider_timeout=2.0, provider_failure_ttl=1.0,
                          exec_commands=((str(backend / "vendor-cli"),),), exec_environment=("VENDOR_DELAY",),
                          max_concurrent_rpcs_per_identity=200).start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def stubs(server_fast_failures):
    with server_fast_failures.channel() as channel:
        yield pb_grpc.SecretProviderServiceStub(channel), v2_grpc.ConfigServiceStub(channel)


def create_exec(stub, backend: Path, name: str = "vendor", **init: str) -> pb.ProviderInstance:
    instance = pb.ProviderInstance(name=name, provider_type="exec")
    instance.initialization["Command"].value = f'["{backend / "vendor-cli"}"]'
    instance.initialization["Token"].value = PLANTED_TOKEN
    for key, value in init.items():
        instance.initialization[key].value = value
    return stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider


def ref(provider: int, **params: str) -> secret_pb2.SecretObject:
    return secret_pb2.SecretObject(provider=provider, parameters=params)


def check(stub, secret: secret_pb2.SecretObject) -> pb.CheckSecretResponse:
    return stub.CheckSecret(pb.CheckSecretRequest(secret=secret))


# --- types and instances ------------------------------------------------------------------------


def test_provider_types_come_from_plugins(stubs) -> None:
    providers, _ = stubs
    types = {t.name: t for t in providers.ListProviderTypes(pb.ListProviderTypesRequest()).provider_types}
    assert {"exec", "file", "vault"} <= types.keys()
    assert "inline" not in types  # implicit: SecretValue
    token = next(p for p in types["exec"].parameters if p.name == "Token")
    assert token.data_type == pb.PARAMETER_DATA_TYPE_SECRET and not token.instance_level
    assert types["file"].plugin == "file" and types["exec"].plugin == "exec"


def test_instance_lifecycle_never_returns_secret_values(stubs, backend) -> None:
    providers, _ = stubs
    created = create_exec(providers, backend)
    assert created.id == 1 and created.source == pb.PROVIDER_SOURCE_API and created.etag
    shown = providers.GetProvider(pb.GetProviderRequest(id=created.id)).provider
    assert shown.initialization["Token"] == pb.InitializationValue(has_value=True)
    assert shown.initialization["Command"].value.endswith('vendor-cli"]')
    assert PLANTED_TOKEN not in str(providers.ListProviders(pb.ListProvidersRequest()))

    # Masked update: rename, keep the token without resending it.
    request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=created.id, name="renamed"))
    request.update_mask.paths.append("Name")
    updated = providers.UpdateProvider(request).provider
    assert updated.name == "renamed" and updated.initialization["Token"].has_value
    assert updated.etag != created.etag

    with pytest.raises(grpc.RpcError) as stale:
        providers.DeleteProvider(pb.DeleteProviderRequest(id=created.id, etag=created.etag))
    assert stale.value.code() == grpc.StatusCode.ABORTED
    providers.DeleteProvider(pb.DeleteProviderRequest(id=created.id, etag=updated.etag))
    with pytest.raises(grpc.RpcError) as gone:
        providers.GetProvider(pb.GetProviderRequest(id=created.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


BAD_INSTANCES = [
    ("no name", dict(name="", provider_type="exec", init={"Command": "x"}), "Name"),
    ("unknown type", dict(name="n", provider_type="cyberark", init={}), "ProviderType"),
    ("inline needs no instance", dict(name="n", provider_type="inline", init={}), "ProviderType"),
    ("missing required init value", dict(name="n", provider_type="exec", init={}), "Initialization.Command"),
    ("unknown init parameter", dict(name="n", provider_type="exec", init={"Command": "x", "Shell": "bash"}),
     "Initialization.Shell"),
    ("instance parameter given as init", dict(name="n", provider_type="exec", init={"Command": "x", "Name": "a"}),
     "Initialization.Name"),
]


@pytest.mark.parametrize("reason,given,field", BAD_INSTANCES, ids=[b[0] for b in BAD_INSTANCES])
def test_bad_instances_are_refused_and_nothing_is_stored(stubs, reason, given, field) -> None:
    providers, _ = stubs
    instance = pb.ProviderInstance(name=given["name"], provider_type=given["provider_type"])
    for key, value in given["init"].items():
        instance.initialization[key].value = value
    with pytest.raises(grpc.RpcError) as failure:
        providers.CreateProvider(pb.CreateProviderRequest(provider=instance))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in violations(failure.value)]
    assert not providers.ListProviders(pb.ListProvidersRequest()).providers


BIDI_NAMES = [
    ("vault\u202e", "RIGHT-TO-LEFT OVERRIDE: what follows shows reversed"),
    ("\u202dvault", "LEFT-TO-RIGHT OVERRIDE"),
    ("va\u202aul\u202ct", "an embedding and its POP DIRECTIONAL FORMATTING"),
    ("vault\u2067x\u2069", "RIGHT-TO-LEFT ISOLATE and POP DIRECTIONAL ISOLATE"),
    ("\u2066vault", "LEFT-TO-RIGHT ISOLATE"),
    ("\u2068vault", "FIRST STRONG ISOLATE"),
    ("vault\u200f", "RIGHT-TO-LEFT MARK: invisible, a second 'vault'"),
    ("vault\u200e", "LEFT-TO-RIGHT MARK"),
    ("vault\u061c", "ARABIC LETTER MARK"),
]


@pytest.mark.parametrize(("name", "why"), BIDI_NAMES, ids=[b[1] for b in BIDI_NAMES])
def test_a_name_with_bidirectional_controls_is_refused(stubs, backend, name: str, why: str) -> None:
    providers, _ = stubs
    with pytest.raises(grpc.RpcError) as created:
        create_exec(providers, backend, name=name)
    assert created.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [d for f, d in violations(created.value) if f == "Name"] == [
        "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)"
    ], why
    assert not providers.ListProviders(pb.ListProvidersRequest()).providers

    # Nor can an instance be renamed to it.
    kept = create_exec(providers, backend, name="vault")
    request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=kept.id, name=name))
    request.update_mask.paths.append("Name")
    with pytest.raises(grpc.RpcError) as renamed:
        providers.UpdateProvider(request)
    assert renamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Name" in dict(violations(renamed.value))
    assert [p.name for p in providers.ListProviders(pb.ListProvidersRequest()).providers] == ["vault"]


def test_duplicate_name_and_type_change_are_refused(stubs, backend) -> None:
    providers, _ = stubs
    first = create_exec(providers, backend, name="one")
    with pytest.raises(grpc.RpcError) as duplicate:
        create_exec(providers, backend, name="one")
    assert ("Name" in [f for f, _ in violations(duplicate.value)])
    change = pb.ProviderInstance(id=first.id, name="one", provider_type="file")
    with pytest.raises(grpc.RpcError) as retype:
        providers.UpdateProvider(pb.UpdateProviderRequest(provider=change))
    assert "ProviderType" in [f for f, _ in violations(retype.value)]


# --- references in the profile ------------------------------------------------------------------


def test_references_are_checked_against_the_instance_type(stubs, backend) -> None:
    providers, config = stubs
    vendor = create_exec(providers, backend)
    good = edit(BASIC_V2, RelayPassword={"Provider": vendor.id, "Parameters": {"Name": "smtp-password"}})
    etag = config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(good))).etag
    cases = [
        ({"Provider": vendor.id, "Parameters": {"Name": "x", "Path": "p"}}, "RelayPassword.Parameters.Path"),
        ({"Provider": vendor.id, "Parameters": {}}, "RelayPassword.Parameters.Name"),
        # Parameters of another provider type (Vault's) on an exec instance: wrong type.
        ({"Provider": vendor.id, "Parameters": {"Secret": "smtp", "Key": "password"}}, "RelayPassword.Parameters.Secret"),
        ({"Provider": vendor.id + 40, "Parameters": {"Name": "x"}}, "RelayPassword.Provider"),
    ]
    for secret, field in cases:
        with pytest.raises(grpc.RpcError) as failure:
            config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=secret))))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in violations(failure.value)], secret
        assert config.GetSmtp(v2.GetSmtpRequest()).etag == etag


def test_referenced_instance_cannot_be_deleted(stubs, backend) -> None:
    providers, config = stubs
    vendor = create_exec(providers, backend)
    doc = edit(BASIC_V2, RelayPassword={"Provider": vendor.id, "Parameters": {"Name": "smtp-password"}})
    config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)))
    with pytest.raises(grpc.RpcError) as refused:
        providers.DeleteProvider(pb.DeleteProviderRequest(id=vendor.id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "referenced by the SMTP profile" in refused.value.details()
    assert providers.GetProvider(pb.GetProviderRequest(id=vendor.id)).provider.name == "vendor"
    config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))  # points elsewhere now
    providers.DeleteProvider(pb.DeleteProviderRequest(id=vendor.id))


# --- CheckSecret and the engine -----------------------------------------------------------------


def test_check_secret_resolves_and_fingerprints_without_the_value(stubs, backend) -> None:
    providers, _ = stubs
    vendor = create_exec(providers, backend)
    first = check(providers, ref(vendor.id, Name="smtp-password"))
    assert first.success and first.provider == vendor.id and first.provider_type == "exec"
    assert not first.cached and first.fingerprint.startswith("hmac-sha256:")
    assert "s3cret-from-vendor" not in str(first)
    # The fingerprint of the same value given inline matches: the provider returned the right bytes.
    inline = check(providers, secret_pb2.SecretObject(secret_value="s3cret-from-vendor"))
    assert inline.fingerprint == first.fingerprint and inline.provider_type == "inline"
    assert check(providers, secret_pb2.SecretObject(secret_value="other")).fingerprint != first.fingerprint
    second = check(providers, ref(vendor.id, Name="smtp-password"))
    assert second.cached and second.fingerprint == first.fingerprint
    assert count_calls(backend) == 1


def test_check_secret_on_a_stored_profile_field(stubs, backend) -> None:
    providers, config = stubs
    vendor = create_exec(providers, backend)
    doc = edit(BASIC_V2, RelayPassword={"Provider": vendor.id, "Parameters": {"Name": "smtp-password"}})
    config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)))
    reply = providers.CheckSecret(pb.CheckSecretRequest(profile_field="RelayPassword"))
    assert reply.provider == vendor.id
    user = providers.CheckSecret(pb.CheckSecretRequest(profile_field="RelayUsername"))
    assert user.provider_type == "inline"
    with pytest.raises(grpc.RpcError) as bad:
        providers.CheckSecret(pb.CheckSecretRequest(profile_field="Host"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_two_hundred_concurrent_checks_share_one_backend_call(stubs, backend) -> None:
    providers, _ = stubs
    vendor = create_exec(providers, backend, Environment='{"VENDOR_DELAY": "0.5"}')
    with ThreadPoolExecutor(max_workers=200) as pool:
        replies = list(pool.map(lambda _: check(providers, ref(vendor.id, Name="smtp-user")), range(200)))
    assert count_calls(backend, "smtp-user") == 1
    assert len({r.fingerprint for r in replies}) == 1


ERRORS = [
    ("secret missing in the backend", "nope", grpc.StatusCode.FAILED_PRECONDITION, "Name=nope"),
    ("backend fails", "explode", grpc.StatusCode.UNAVAILABLE, "exit"),
]


@pytest.mark.parametrize("reason,name,code,says", ERRORS, ids=[e[0] for e in ERRORS])
def test_backend_errors_map_to_status_codes_and_are_cached_briefly(stubs, backend, reason, name, code, says) -> None:
    providers, _ = stubs
    vendor = create_exec(providers, backend)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as failure:
            check(providers, ref(vendor.id, Name=name))
        assert failure.value.code() == code
        assert says in failure.value.details()
        for planted in ("PLANTED-stdout-of-failure", PLANTED_TOKEN):
            assert planted not in failure.value.details()
    assert count_calls(backend, name) == 1  # failures are remembered for provider_failure_ttl
    time.sleep(1.2)
    with pytest.raises(grpc.RpcError):
        check(providers, ref(vendor.id, Name=name))
    assert count_calls(backend, name) == 2  # and retried after it


def test_slow_backend_times_out_without_starving_other_calls(stubs, backend) -> None:
    providers, config = stubs
    vendor = create_exec(providers, backend, Environment='{"VENDOR_DELAY": "30"}')
    config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
    outcomes: list = []

    def slow() -> None:
        started = time.monotonic()
        try:
            check(providers, ref(vendor.id, Name=f"slow-{threading.get_ident()}"))
        except grpc.RpcError as error:
            outcomes.append((error.code(), time.monotonic() - started))

    threads = [threading.Thread(target=slow) for _ in range(40)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # While 40 slow resolutions wait, reads are answered promptly.
    for _ in range(20):
        started = time.monotonic()
        config.GetSmtp(v2.GetSmtpRequest())
        assert time.monotonic() - started < 0.5
    for t in threads:
        t.join(20)
    assert len(outcomes) == 40
    assert all(code == grpc.StatusCode.UNAVAILABLE and took < 5 for code, took in outcomes)


def test_instance_change_drops_cached_values(stubs, backend) -> None:
    providers, _ = stubs
    vendor = create_exec(providers, backend)
    check(providers, ref(vendor.id, Name="smtp-user"))
    request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=vendor.id))
    request.provider.initialization["TtlSeconds"].value = "60"
    request.update_mask.paths.append("Initialization")
    providers.UpdateProvider(request)
    assert not check(providers, ref(vendor.id, Name="smtp-user")).cached
    assert count_calls(backend, "smtp-user") == 2


def test_planted_token_is_not_in_the_database(stubs, backend, server_fast_failures) -> None:
    providers, _ = stubs
    create_exec(providers, backend)
    data_dir = server_fast_failures.settings.data_dir
    for path in data_dir.iterdir():
        if path.is_file() and not path.name.endswith(".sock"):
            assert PLANTED_TOKEN.encode() not in path.read_bytes(), path
    assert as_json(providers.ListProviders(pb.ListProvidersRequest()))  # still readable
