"""The /metrics endpoint of a running server, scraped over loopback HTTP before and after real
traffic: RPCs by method and status code, provider calls, the secret cache, audit records and OAuth
token fetches move by exactly what the traffic did, and no secret value is ever exposed.

Backends are real: the first-party `file` provider reading a file from a temporary directory, and a
real OAuth token endpoint (tests/kits/oauthkit.py, plain HTTP on loopback, which profiles allow).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.metrics import moved, scrape
from tests.kits.oauthkit import TokenEndpoint
from tests.kits.profiles import BASIC_V2, OAUTH_V2, edit, v2_profile
from tests.kits.support import ServerThread, short_dir

FILE_SECRET = "PLANTED-file-secret-0c4e91"
INLINE_SECRET = "PLANTED-inline-checked-7a2d"
CLIENT_SECRET = "PLANTED-client-secret-e5b3"
CLIENT_ID = "client-metrics"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    data_dir = short_dir("me")
    server = ServerThread(data_dir, metrics_listen="127.0.0.1:0", file_directories=(tmp_path,)).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_scrapes_show_the_traffic_between_them_and_no_secret(server: ServerThread, tmp_path: Path) -> None:
    port = server.app.metrics_port
    assert port and port not in server.app.ports.values()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "smtp-password").write_text(FILE_SECRET + "\n")

    with TokenEndpoint({CLIENT_ID: CLIENT_SECRET}) as idp, server.channel() as channel, \
            grpc.insecure_channel(server.target) as anonymous:
        config = v2_grpc.ConfigServiceStub(channel)
        providers = pb_grpc.SecretProviderServiceStub(channel)
        instance = pb.ProviderInstance(name="mounted", provider_type="file")
        instance.initialization["Directory"].value = str(secrets_dir)
        file_provider = providers.CreateProvider(pb.CreateProviderRequest(provider=instance), timeout=10).provider.id
        oauth = edit(OAUTH_V2, TokenEndpoint=idp.url, ClientId={"SecretValue": CLIENT_ID},
                     ClientSecret={"SecretValue": CLIENT_SECRET})
        config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(oauth)), timeout=10)

        _, before = scrape(port)
        for _ in range(3):
            config.GetSmtp(v2.GetSmtpRequest(), timeout=10)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as failure:
                v2_grpc.ConfigServiceStub(anonymous).GetSmtp(v2.GetSmtpRequest(), timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as failure:
            v2_grpc.ConfigServiceStub(anonymous).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED

        inline = providers.CheckSecret(pb.CheckSecretRequest(
            secret=secret_pb2.SecretObject(secret_value=INLINE_SECRET)), timeout=10)
        assert inline.provider_type == "inline"
        reference = pb.CheckSecretRequest(secret=secret_pb2.SecretObject(
            provider=file_provider, parameters={"File": "smtp-password"}))
        first = providers.CheckSecret(reference, timeout=10)
        second = providers.CheckSecret(reference, timeout=10)
        assert (first.cached, second.cached) == (False, True)
        assert first.fingerprint == second.fingerprint

        resolved = [config.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=30) for _ in range(2)]
        token = resolved[0].credentials.access_token
        assert token and resolved[1].credentials.access_token == token
        assert len(idp.token_requests) == 1  # the second came from the cache
        text, after = scrape(port)

    get = "v2.ConfigService/GetSmtp"
    assert moved(before, after, "smtpconfig_rpc_requests_total", method=get, code="OK") == 3
    assert moved(before, after, "smtpconfig_rpc_duration_seconds_count", method=get, code="OK") == 3
    assert moved(before, after, "smtpconfig_rpc_duration_seconds_sum", method=get, code="OK") > 0
    assert moved(before, after, "smtpconfig_rpc_requests_total", method=get, code="UNAUTHENTICATED") == 2
    assert moved(before, after, "smtpconfig_rpc_requests_total",
                 method="v2.ConfigService/ResolveSmtp", code="UNAUTHENTICATED") == 1
    assert moved(before, after, "smtpconfig_rpc_requests_total",
                 method="v2.SecretProviderService/CheckSecret", code="OK") == 3
    assert moved(before, after, "smtpconfig_rpc_requests_total", method="v2.ConfigService/ResolveSmtp", code="OK") == 2

    assert moved(before, after, "smtpconfig_provider_calls_total", provider_type="file", outcome="ok") == 1
    assert moved(before, after, "smtpconfig_provider_call_duration_seconds_count", provider_type="file") == 1
    # The inline check at least (the profile's inline ClientId and ClientSecret count here too).
    assert moved(before, after, "smtpconfig_provider_calls_total", provider_type="inline", outcome="ok") >= 1
    assert moved(before, after, "smtpconfig_secret_cache_requests_total", result="miss") == 1
    assert moved(before, after, "smtpconfig_secret_cache_requests_total", result="hit") == 1

    # Audited: three checks and two resolutions succeeded; the anonymous resolution was refused.
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="OK") == 5
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="UNAUTHENTICATED") == 1
    assert moved(before, after, "smtpconfig_token_fetches_total", outcome="ok") == 1
    assert moved(before, after, "smtpconfig_token_fetch_duration_seconds_count") == 1
    assert moved(before, after, "smtpconfig_token_fetches_total", outcome="error") == 0

    for secret in (FILE_SECRET, INLINE_SECRET, CLIENT_SECRET, token, server.token):
        assert secret not in text, f"{secret[:12]}... in the exposition"


def test_changes_that_write_their_own_record_count_in_the_audit_metric(server: ServerThread, tmp_path: Path) -> None:
    """Changes store their audit record in the same transaction as the change, not through the
    audit writer: the metric must count them all the same, once each."""
    port = server.app.metrics_port
    with server.channel() as channel:
        config = v2_grpc.ConfigServiceStub(channel)
        providers = pb_grpc.SecretProviderServiceStub(channel)
        _, before = scrape(port)
        stored = config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
        config.UpdateSmtp(v2.UpdateSmtpRequest(
            profile=v2_profile(edit(BASIC_V2, Port=2525)), etag=stored.etag,
            update_mask=field_mask_pb2.FieldMask(paths=["Port"])), timeout=10)
        instance = pb.ProviderInstance(name="mounted", provider_type="file")
        instance.initialization["Directory"].value = str(tmp_path)
        providers.CreateProvider(pb.CreateProviderRequest(provider=instance), timeout=10)
        _, after = scrape(port)
        records = audit_grpc.AuditServiceStub(channel).ListAuditRecords(
            audit_pb.ListAuditRecordsRequest(), timeout=10).records

    update = "v2.ConfigService/UpdateSmtp"
    assert moved(before, after, "smtpconfig_rpc_requests_total", method=update, code="OK") == 2
    assert [(r.method, r.outcome) for r in records] == [
        (update, "OK"), (update, "OK"), ("v2.SecretProviderService/CreateProvider", "OK")]
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="OK") == 3


def test_the_endpoint_stops_with_the_server(tmp_path: Path) -> None:
    data_dir = short_dir("ms")
    server = ServerThread(data_dir, metrics_listen="127.0.0.1:0").start()
    try:
        port = server.app.metrics_port
        _, samples = scrape(port)
        assert ("smtpconfig_secret_cache_requests_total", (("result", "hit"),)) in samples
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    with pytest.raises(OSError):
        scrape(port)
