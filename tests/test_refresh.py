"""Fresh credentials on demand (issue 13): ResolveSmtp with `refresh` past the resolver's cache and
the token cache, once per identity per `refresh_interval_seconds`, audited; and TestSmtp reading
Basic credentials again by itself after a 535. Against a real OpenBao, a real OAuth token endpoint
and a real aiosmtpd relay, all on loopback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from smtpconfig.v2 import config_service_pb2 as v2
from tests.kits.applykit import PASSWORD, USER, Net, Service, basic, oauth, outcomes, serve, smtp_kit, token_endpoint
from tests.kits.calls import ALICE_TOKEN, BOB_TOKEN, CALLERS, invoke, list_records, rid
from tests.kits.openbao import OpenBao
from tests.kits.support import retry_delay

RESOLVE = "v2.ConfigService/ResolveSmtp"
REFRESH = v2.ResolveSmtpRequest(refresh=True)
PLAIN = v2.ResolveSmtpRequest()


@pytest.fixture
def svc(net: Net) -> Iterator[Service]:
    """A server of its own per test: the refresh limit is per identity and per server."""
    yield from serve(net, **CALLERS)


def vault_refs(svc: Service, bao: OpenBao, password: str) -> tuple[str, dict[str, Any]]:
    """A fresh secret in OpenBao holding USER and `password`, and profile references to it."""
    path = f"refresh/{uuid.uuid4().hex[:8]}"
    bao.kv_put("secret", path, {"username": USER, "password": password})
    provider = svc.vault(bao, f"bao-{path[-8:]}")

    def ref(key: str) -> dict[str, Any]:
        return {"Provider": provider, "Parameters": {"Secret": path, "Key": key}}

    return path, {"RelayUsername": ref("username"), "RelayPassword": ref("password")}



def record_of(svc: Service, request_id: str):
    (record,) = [r for r in list_records(svc.channel, ALICE_TOKEN) if r.request_id == request_id]
    return record


def test_refresh_returns_a_password_rotated_in_vault_at_once(svc: Service, net: Net, openbao_server: OpenBao) -> None:
    path, refs = vault_refs(svc, openbao_server, "PLANTED-old-password-41aa")
    with smtp_kit(net, "starttls") as smtp:
        svc.store(basic(smtp, **refs))
    assert invoke(svc.v2.ResolveSmtp, PLAIN, ALICE_TOKEN, rid("first")).credentials.password == \
        "PLANTED-old-password-41aa"
    openbao_server.kv_put("secret", path, {"username": USER, "password": "PLANTED-new-password-7c02"})
    reads = openbao_server.count_reads(f"secret/data/{path}")

    cached = invoke(svc.v2.ResolveSmtp, PLAIN, ALICE_TOKEN, rid("cached"))
    assert cached.credentials.password == "PLANTED-old-password-41aa"  # within the cache time
    assert openbao_server.count_reads(f"secret/data/{path}") == reads

    refreshed_id = rid("refresh")
    refreshed = invoke(svc.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, refreshed_id)
    assert refreshed.credentials.password == "PLANTED-new-password-7c02"
    assert refreshed.credentials.username == USER
    assert openbao_server.count_reads(f"secret/data/{path}") > reads
    # What the refresh read is what stays cached for everyone.
    after = invoke(svc.v2.ResolveSmtp, PLAIN, BOB_TOKEN, rid("after"))
    assert after.credentials.password == "PLANTED-new-password-7c02"

    record = record_of(svc, refreshed_id)
    assert (record.identity, record.method, record.outcome) == ("alice", RESOLVE, "OK")
    assert "refresh" in record.message and "RelayPassword" in record.fields
    assert "PLANTED" not in str(record)


def test_a_second_refresh_within_the_interval_is_refused_for_that_identity_only(
    svc: Service, net: Net, openbao_server: OpenBao,
) -> None:
    _, refs = vault_refs(svc, openbao_server, PASSWORD)
    with smtp_kit(net, "starttls") as smtp:
        svc.store(basic(smtp, **refs))
    invoke(svc.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, rid("alice-1"))
    refused_id = rid("alice-2")
    refused = invoke(svc.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, refused_id, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert 0 < retry_delay(refused) <= 10.0
    assert "retry in" in refused.details() and "refresh" in refused.details()
    assert PASSWORD not in refused.details()

    # Another identity's refresh, and plain resolutions of the refused one, go through.
    assert invoke(svc.v2.ResolveSmtp, REFRESH, BOB_TOKEN, rid("bob-1")).credentials.password == PASSWORD
    assert invoke(svc.v2.ResolveSmtp, PLAIN, ALICE_TOKEN, rid("alice-plain")).credentials.password == PASSWORD

    record = record_of(svc, refused_id)
    assert (record.identity, record.outcome) == ("alice", "RESOURCE_EXHAUSTED")
    assert "refresh" in record.message and not record.fields


@pytest.fixture
def quick(net: Net) -> Iterator[Service]:
    """A server whose refresh interval is half a second."""
    yield from serve(net, refresh_interval_seconds=0.5, **CALLERS)


def test_after_the_interval_the_same_identity_may_refresh_again(
    quick: Service, net: Net, openbao_server: OpenBao,
) -> None:
    _, refs = vault_refs(quick, openbao_server, PASSWORD)
    with smtp_kit(net, "starttls") as smtp:
        quick.store(basic(smtp, **refs))
    invoke(quick.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, rid("one"))
    invoke(quick.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, rid("two"), grpc.StatusCode.RESOURCE_EXHAUSTED)
    time.sleep(0.6)
    invoke(quick.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, rid("three"))


def test_refresh_fetches_a_new_oauth_token(svc: Service, net: Net) -> None:
    with token_endpoint(net, expires_in=1800) as idp:
        with smtp_kit(net, "starttls") as smtp:
            svc.store(oauth(smtp, idp))
        first = invoke(svc.v2.ResolveSmtp, PLAIN, ALICE_TOKEN, rid("token-1"))
        again = invoke(svc.v2.ResolveSmtp, PLAIN, ALICE_TOKEN, rid("token-2"))
        assert again.credentials.access_token == first.credentials.access_token
        assert len(idp.token_requests) == 1  # from the token cache

        fresh = invoke(svc.v2.ResolveSmtp, REFRESH, ALICE_TOKEN, rid("token-refresh"))
        assert len(idp.token_requests) == 2
        assert fresh.credentials.access_token != first.credentials.access_token
        assert idp.token_valid(fresh.credentials.access_token)
        # The new token is the one cached from now on.
        later = invoke(svc.v2.ResolveSmtp, PLAIN, BOB_TOKEN, rid("token-3"))
        assert later.credentials.access_token == fresh.credentials.access_token
        assert len(idp.token_requests) == 2


def test_test_smtp_reads_rotated_basic_credentials_again_after_a_535(
    svc: Service, net: Net, openbao_server: OpenBao,
) -> None:
    path, refs = vault_refs(svc, openbao_server, "PLANTED-before-rotation-3e9d")
    with smtp_kit(net, "starttls", credentials={USER: "PLANTED-before-rotation-3e9d"}) as smtp:
        svc.store(basic(smtp, **refs))
        assert svc.test(None).success  # caches the credentials in the service
        # The password is rotated in Vault and the relay now accepts only the new one.
        openbao_server.kv_put("secret", path, {"username": USER, "password": "PLANTED-after-rotation-a61b"})
        smtp.credentials[USER] = "PLANTED-after-rotation-a61b"

        response = svc.test(None)
        assert response.success, outcomes(response)
        assert outcomes(response) == [
            ("resolve", "OK"), ("token", "SKIPPED"), ("connect", "OK"), ("tls", "OK"), ("resolve", "OK"),
            ("auth", "OK"), ("send", "OK"),
        ]
        assert "535" in response.steps[4].message and "again" in response.steps[4].message
        assert [a.success for a in smtp.auth_attempts[-2:]] == [False, True]
        assert "PLANTED" not in str(response)

        # With the new password cached, the next test needs no retry.
        assert [s.name for s in svc.test(None).steps].count("resolve") == 1


def test_test_smtp_tries_no_second_auth_when_the_fresh_credentials_are_the_refused_ones(
    svc: Service, net: Net, openbao_server: OpenBao,
) -> None:
    _, refs = vault_refs(svc, openbao_server, "PLANTED-wrong-everywhere-0c4e")
    with smtp_kit(net, "starttls", credentials={USER: "something-else"}) as smtp:
        svc.store(basic(smtp, **refs))
        response = svc.test(None)
        assert not response.success
        assert outcomes(response)[-2:] == [("resolve", "OK"), ("auth", "FAILED")]
        assert "unchanged" in response.steps[-2].message
        assert response.steps[-1].smtp_code == 535
        assert [a.success for a in smtp.auth_attempts] == [False]  # no second failed login at the relay


def test_test_smtp_rotated_and_still_refused_reports_the_second_535(
    svc: Service, net: Net, openbao_server: OpenBao,
) -> None:
    path, refs = vault_refs(svc, openbao_server, "PLANTED-first-one-77d0")
    with smtp_kit(net, "starttls", credentials={USER: "PLANTED-first-one-77d0"}) as smtp:
        svc.store(basic(smtp, **refs))
        assert svc.test(None).success
        openbao_server.kv_put("secret", path, {"username": USER, "password": "PLANTED-second-one-19fe"})
        smtp.credentials[USER] = "PLANTED-third-one-c3b5"
        response = svc.test(None)
        assert not response.success
        assert outcomes(response)[-2:] == [("resolve", "OK"), ("auth", "FAILED")]
        assert response.steps[-1].smtp_code == 535
        assert [a.success for a in smtp.auth_attempts[-2:]] == [False, False]  # one retry, no more
