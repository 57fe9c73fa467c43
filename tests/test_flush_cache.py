"""FlushCache and `smtpconfig providers flush`: after a rotation in a real OpenBao, the service hands
out the new value at once instead of the cached one, for every instance, one, or one reference."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from smtpconfig.cli.main import main
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.metrics import moved, scrape
from tests.kits.openbao import OpenBao
from tests.kits.providers import check, fingerprint_of, vault_instance
from tests.kits.support import ServerThread, short_dir, violations

OLD = "PLANTED-before-rotation-41c2"
NEW = "PLANTED-after-rotation-9e07"
MISS = "smtpconfig_secret_cache_requests_total"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The default cache time of Vault values (300 s), failures remembered for a minute."""
    data_dir = short_dir("fl")
    server = ServerThread(data_dir, provider_timeout=10.0, provider_failure_ttl=60.0,
                          metrics_listen="127.0.0.1:0").start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def stub(server: ServerThread) -> Iterator[pb_grpc.SecretProviderServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.SecretProviderServiceStub(channel)


def flush(stub, **scope) -> pb.FlushCacheResponse:
    return stub.FlushCache(pb.FlushCacheRequest(**scope))


def reference(provider: int, **parameters: str) -> secret_pb2.SecretObject:
    return secret_pb2.SecretObject(provider=provider, parameters=parameters)


def test_a_rotated_secret_is_cached_until_flushed_then_read_anew(
    stub, server: ServerThread, openbao_server: OpenBao
) -> None:
    bao = openbao_server
    bao.kv_put("secret", "flush/a", {"password": OLD})
    bao.kv_put("secret", "flush/b", {"password": OLD})
    vault = vault_instance(stub, bao, name="rotating")
    other = vault_instance(stub, bao, name="bystander")
    first = check(stub, vault, Secret="flush/a", Key="password")
    check(stub, vault, Secret="flush/b", Key="password")
    check(stub, other, Secret="flush/a", Key="password")
    assert first.fingerprint == fingerprint_of(stub, OLD) and first.cache_remaining.seconds > 250

    bao.kv_put("secret", "flush/a", {"password": NEW})
    bao.kv_put("secret", "flush/b", {"password": NEW})
    stale = check(stub, vault, Secret="flush/a", Key="password")
    assert stale.cached and stale.fingerprint == first.fingerprint, "within the TTL the old value is served"

    # One reference, named with the Keyfactor-era aliases: only it is read again.
    dropped = flush(stub, secret=reference(vault, SecretPath="flush/a", Field="password"))
    assert (dropped.values, dropped.failures) == (1, 0)
    fresh = check(stub, vault, Secret="flush/a", Key="password")
    assert not fresh.cached and fresh.fingerprint == fingerprint_of(stub, NEW) and fresh.version == "2"
    assert check(stub, vault, Secret="flush/b", Key="password").cached

    # One instance: its other reference too, not the other instance's.
    assert flush(stub, provider=vault).values == 2
    fresh_b = check(stub, vault, Secret="flush/b", Key="password")
    assert not fresh_b.cached and fresh_b.fingerprint == fingerprint_of(stub, NEW)
    assert check(stub, other, Secret="flush/a", Key="password").fingerprint == first.fingerprint

    # Every instance.
    assert flush(stub).values == 2  # vault: flush/b read again; other: flush/a
    assert check(stub, other, Secret="flush/a", Key="password").fingerprint == fingerprint_of(stub, NEW)
    assert flush(stub, provider=other).values == 1 and flush(stub, provider=other).values == 0

    with server.channel() as channel:
        records = audit_grpc.AuditServiceStub(channel).ListAuditRecords(audit_pb.ListAuditRecordsRequest()).records
    flushes = [r for r in records if r.method == "v2.SecretProviderService/FlushCache"]
    assert [(r.identity, r.outcome, r.provider) for r in flushes[:3]] == [
        ("admin", "OK", vault), ("admin", "OK", vault), ("admin", "OK", 0)]
    assert flushes[0].message == "dropped values: 1, failures: 0 for {Key=password, Secret=flush/a}"
    assert flushes[2].message == "dropped values: 2, failures: 0"
    assert not any(secret in str(records) for secret in (OLD, NEW, bao.root_token))


def test_a_remembered_failure_is_dropped_too(stub, openbao_server: OpenBao) -> None:
    openbao_server.kv_put("secret", "flush/late", {"user": "relay"})
    vault = vault_instance(stub, openbao_server, name="late")
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as missing:
            check(stub, vault, Secret="flush/late", Key="password")
        assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    openbao_server.kv_put("secret", "flush/late", {"user": "relay", "password": NEW})
    with pytest.raises(grpc.RpcError):
        check(stub, vault, Secret="flush/late", Key="password")  # remembered for a minute
    dropped = flush(stub, provider=vault)
    assert (dropped.values, dropped.failures) == (0, 1)
    assert check(stub, vault, Secret="flush/late", Key="password").fingerprint == fingerprint_of(stub, NEW)


def test_what_a_call_in_flight_read_before_the_flush_is_not_cached(
    stub, server: ServerThread, tmp_path: Path
) -> None:
    bao = OpenBao(tmp_path, audit=False).start()
    try:
        bao.kv_put("secret", "flush/slow", {"password": OLD})
        vault = vault_instance(stub, bao, name="slow")
        port = server.app.metrics_port
        assert port
        before = scrape(port)[1]
        bao.pause()  # the read waits in OpenBao until it resumes
        answers: list[pb.CheckSecretResponse] = []
        reader = threading.Thread(target=lambda: answers.append(check(stub, vault, Secret="flush/slow", Key="password")))
        reader.start()
        deadline = time.monotonic() + 5
        while moved(before, scrape(port)[1], MISS, result="miss") < 1:  # the call is in flight
            assert time.monotonic() < deadline, "the check never started"
            time.sleep(0.02)
        assert (flush(stub, provider=vault).values, reader.is_alive()) == (0, True)
        bao.resume()
        reader.join(10)
        assert answers and answers[0].fingerprint == fingerprint_of(stub, OLD), "its own caller still gets it"
        bao.kv_put("secret", "flush/slow", {"password": NEW})
        after = check(stub, vault, Secret="flush/slow", Key="password")
        assert not after.cached and after.fingerprint == fingerprint_of(stub, NEW)
    finally:
        bao.resume()
        bao.stop()


# (case, request, status, field the error names)
BAD = [
    ("Provider 0", pb.FlushCacheRequest(provider=0), grpc.StatusCode.INVALID_ARGUMENT, "Provider"),
    ("Provider negative", pb.FlushCacheRequest(provider=-3), grpc.StatusCode.INVALID_ARGUMENT, "Provider"),
    ("no such Provider", pb.FlushCacheRequest(provider=99), grpc.StatusCode.NOT_FOUND, None),
    ("an inline value", pb.FlushCacheRequest(secret=secret_pb2.SecretObject(secret_value=OLD)),
     grpc.StatusCode.INVALID_ARGUMENT, "Secret"),
    ("a reference without Provider", pb.FlushCacheRequest(secret=secret_pb2.SecretObject(parameters={"Key": "k"})),
     grpc.StatusCode.INVALID_ARGUMENT, "Secret"),
    ("a reference to no instance", pb.FlushCacheRequest(secret=reference(99, Secret="s", Key="k")),
     grpc.StatusCode.INVALID_ARGUMENT, "Secret.Provider"),
    ("an unknown parameter", pb.FlushCacheRequest(secret=reference(1, Secret="flush/a", Key="k", Nope="x")),
     grpc.StatusCode.INVALID_ARGUMENT, "Secret.Parameters.Nope"),
    ("a missing parameter", pb.FlushCacheRequest(secret=reference(1, Secret="flush/a")),
     grpc.StatusCode.INVALID_ARGUMENT, "Secret.Parameters.Key"),
]


@pytest.mark.parametrize("case, request_, code, field", BAD, ids=[b[0] for b in BAD])
def test_bad_scopes_are_refused_and_drop_nothing(stub, openbao_server: OpenBao, case, request_, code, field) -> None:
    openbao_server.kv_put("secret", "flush/a", {"password": OLD})
    vault = vault_instance(stub, openbao_server, name="kept")
    assert vault == 1
    check(stub, vault, Secret="flush/a", Key="password")
    with pytest.raises(grpc.RpcError) as refused:
        stub.FlushCache(request_)
    assert refused.value.code() == code
    if field is not None:
        assert field in [f for f, _ in violations(refused.value)]
    assert OLD not in str(refused.value)
    assert check(stub, vault, Secret="flush/a", Key="password").cached, "nothing was dropped"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_flushes_and_check_shows_the_new_value(server: ServerThread, openbao_server: OpenBao, capsys) -> None:
    t = server.cli_args
    openbao_server.kv_put("secret", "flush/cli", {"password": OLD})
    with server.channel() as channel:
        vault = vault_instance(pb_grpc.SecretProviderServiceStub(channel), openbao_server, name="cli")
    ask = ("providers", "check", *t, "--provider", str(vault), "--param", "Secret=flush/cli", "--param", "Key=password")
    code, before, err = run(capsys, *ask)
    assert code == 0, err
    openbao_server.kv_put("secret", "flush/cli", {"password": NEW})
    code, cached, _ = run(capsys, *ask)
    assert "from cache" in cached and cached.splitlines()[1] == before.splitlines()[1]

    code, out, err = run(capsys, "providers", "flush", *t, "--provider", str(vault),
                         "--param", "Secret=flush/cli", "--param", "Key=password")
    assert code == 0, err
    assert out.startswith(f"dropped 1 cached values and 0 remembered failures (provider {vault}, one reference)")
    code, after, _ = run(capsys, *ask)
    assert "fetched" in after and after.splitlines()[1] != before.splitlines()[1]

    code, out, err = run(capsys, "providers", "flush", *t, "--json")
    assert code == 0 and '"Values": 1' in out, err
    code, out, _ = run(capsys, "providers", "flush", *t)
    assert code == 0 and out.startswith("dropped 0 cached values and 0 remembered failures (every provider)")
    code, _, err = run(capsys, "providers", "flush", *t, "--param", "Key=password")
    assert code == 2 and "--param needs --provider" in err
    code, _, err = run(capsys, "providers", "flush", *t, "--provider", "42")
    assert code == 1 and "NOT_FOUND" in err
    assert OLD not in before + cached + after and NEW not in after
