"""GetSmtp and UpdateSmtp semantics: read rules, v1/v2 round trips, replace vs mask, etags."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as providers_grpc
from tests.kits.profiles import BASIC_V1, BASIC_V2, DROP, OAUTH_V2, as_json, edit, v1_profile, v2_profile
from tests.kits.support import violations


def put2(stub, doc, **kw) -> v2.UpdateSmtpResponse:
    return stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc), **kw))


def put1(stub, doc, **kw) -> v1.UpdateSmtpResponse:
    return stub.UpdateSmtp(v1.UpdateSmtpRequest(profile=v1_profile(doc), **kw))


def get2(stub) -> dict:
    return as_json(stub.GetSmtp(v2.GetSmtpRequest()).profile)


def get1(stub) -> dict:
    return as_json(stub.GetSmtp(v1.GetSmtpRequest()).profile)


def test_get_before_any_update_is_not_found(v2_stub, v1_stub) -> None:
    for stub, request in ((v2_stub, v2.GetSmtpRequest()), (v1_stub, v1.GetSmtpRequest())):
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetSmtp(request)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_v2_read_withholds_password_and_shows_has_value(v2_stub) -> None:
    reply = put2(v2_stub, BASIC_V2)
    for shown in (as_json(reply.profile), get2(v2_stub)):
        assert shown["RelayPassword"] == {"HasValue": True}
        assert shown["RelayUsername"] == {"SecretValue": "relay-user", "HasValue": True}
        assert shown["Id"] == 1


def test_v2_oauth_read_withholds_client_secret(v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    shown = get2(v2_stub)
    assert shown["ClientSecret"] == {"HasValue": True}
    assert shown["ClientId"] == {"SecretValue": "client-id-1", "HasValue": True}
    assert shown["TokenEndpoint"] == OAUTH_V2["TokenEndpoint"]
    assert shown["Scope"] == OAUTH_V2["Scope"]
    assert shown["Audience"] == OAUTH_V2["Audience"]
    assert shown["RequestHeaders"] == OAUTH_V2["RequestHeaders"]
    assert shown["RelayAuthenticationType"] == 3


def test_v1_write_reads_back_through_v2(v1_stub, v2_stub) -> None:
    put1(v1_stub, BASIC_V1)
    shown = get2(v2_stub)
    assert shown["Host"] == BASIC_V1["Host"] and shown["Port"] == 25
    assert shown["RelayUsername"] == {"SecretValue": "relay-user", "HasValue": True}
    assert shown["RelayPassword"] == {"HasValue": True}
    assert shown["RelayAuthenticationType"] == 2


def test_v2_write_reads_back_through_v1(v1_stub, v2_stub) -> None:
    put2(v2_stub, BASIC_V2)
    shown = get1(v1_stub)
    expected = edit(BASIC_V2, RelayUsername="relay-user", RelayPassword=DROP)
    assert shown == expected
    assert "RelayPassword" not in shown


def test_v1_port_defaults_to_25(v1_stub) -> None:
    put1(v1_stub, edit(BASIC_V1, Port=DROP))
    assert get1(v1_stub)["Port"] == 25


def test_v2_oauth_profile_read_through_v1_shows_what_v1_can(v1_stub, v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    shown = get1(v1_stub)
    assert shown["RelayAuthenticationType"] == 3
    assert "RelayUsername" not in shown and "RelayPassword" not in shown
    assert not {"ClientId", "ClientSecret", "TokenEndpoint"} & shown.keys()


def test_unused_credentials_are_not_stored(v2_stub) -> None:
    doc = edit(BASIC_V2, RelayAuthenticationType=0, ClientSecret={"SecretValue": "unused"})
    shown = as_json(put2(v2_stub, doc).profile)
    assert not {"RelayUsername", "RelayPassword", "ClientSecret"} & shown.keys()


def test_provider_reference_round_trip_and_unsupported_pam_secret(server_with_provider) -> None:
    ref_user = {"Provider": 7, "Parameters": {"Secret": "smtp", "Key": "username"}}
    ref_pass = {"Provider": 7, "Parameters": {"Secret": "smtp", "Key": "password", "Version": "3"}}
    with server_with_provider.channel() as channel:
        s2, s1 = v2_grpc.ConfigServiceStub(channel), v1_grpc.ConfigServiceStub(channel)
        put2(s2, edit(BASIC_V2, RelayUsername=ref_user, RelayPassword=ref_pass))
        shown = get2(s2)
        assert shown["RelayUsername"] == ref_user
        assert shown["RelayPassword"] == ref_pass  # a reference is not the value: it is shown
        # v1 cannot express a reference: the literal Keyfactor placeholder.
        assert get1(s1)["RelayUsername"] == "UnsupportedPAMSecret"
        # Sending the placeholder back through v1 keeps the reference; the password is replaced.
        v1_doc = edit(get1(s1), RelayPassword="new-inline-password", Port=2525)
        put1(s1, v1_doc)
        after = get2(s2)
        assert after["RelayUsername"] == ref_user
        assert after["RelayPassword"] == {"HasValue": True}
        assert after["Port"] == 2525


def test_full_replace_clears_what_is_not_sent(v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    put2(v2_stub, edit(OAUTH_V2, Scope=DROP, Audience=DROP, RequestHeaders=DROP, UseSSL=DROP))
    shown = get2(v2_stub)
    assert not {"Scope", "Audience", "RequestHeaders", "UseSSL"} & shown.keys()
    # The secret is required again on a full replace: what is not sent is cleared.
    with pytest.raises(grpc.RpcError) as failure:
        put2(v2_stub, edit(OAUTH_V2, ClientSecret=DROP))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_v1_full_replace_clears_v2_only_fields(v1_stub, v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    put1(v1_stub, edit(BASIC_V1, RelayAuthenticationType=0))
    shown = get2(v2_stub)
    assert not {"ClientId", "ClientSecret", "TokenEndpoint", "Scope", "Audience", "RequestHeaders"} & shown.keys()


def test_mask_changes_only_named_fields_and_keeps_the_password(v2_stub) -> None:
    put2(v2_stub, BASIC_V2)
    before = get2(v2_stub)
    request = v2.UpdateSmtpRequest(profile=v2.SmtpProfile(port=2525, sender_name="Renamed"))
    request.update_mask.paths.extend(["port", "SenderName"])  # proto and JSON names both work
    v2_stub.UpdateSmtp(request)
    after = get2(v2_stub)
    assert after == {**before, "Port": 2525, "SenderName": "Renamed"}


def test_mask_can_clear_a_field(v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    request = v2.UpdateSmtpRequest(profile=v2.SmtpProfile())
    request.update_mask.paths.extend(["Audience", "RequestHeaders"])
    v2_stub.UpdateSmtp(request)
    shown = get2(v2_stub)
    assert "Audience" not in shown and "RequestHeaders" not in shown
    assert shown["ClientSecret"] == {"HasValue": True}


def test_v1_mask_keeps_v2_only_fields(v1_stub, v2_stub) -> None:
    put2(v2_stub, OAUTH_V2)
    request = v1.UpdateSmtpRequest(profile=v1.SmtpProfile(port=465, use_ssl=True))
    request.update_mask.paths.extend(["Port", "UseSSL"])
    v1_stub.UpdateSmtp(request)
    shown = get2(v2_stub)
    assert shown["Port"] == 465
    assert shown["ClientSecret"] == {"HasValue": True}
    assert shown["TokenEndpoint"] == OAUTH_V2["TokenEndpoint"]


def test_masked_result_is_validated_as_a_whole(v2_stub) -> None:
    put2(v2_stub, edit(BASIC_V2, RelayAuthenticationType=0))
    request = v2.UpdateSmtpRequest(profile=v2.SmtpProfile(relay_authentication_type=2))
    request.update_mask.paths.append("RelayAuthenticationType")
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.UpdateSmtp(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RelayPassword" in failure.value.details()


def test_etag_changes_with_every_write(v2_stub) -> None:
    first = put2(v2_stub, BASIC_V2).etag
    second = put2(v2_stub, BASIC_V2).etag
    assert first and second and first != second
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).etag == second


def test_update_with_current_etag_applies(v2_stub) -> None:
    etag = put2(v2_stub, BASIC_V2).etag
    reply = put2(v2_stub, edit(BASIC_V2, Port=2525), etag=etag)
    assert reply.profile.port == 2525 and reply.etag != etag


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_stale_etag_is_aborted_and_changes_nothing(v1_stub, v2_stub, api: str) -> None:
    stale = put2(v2_stub, BASIC_V2).etag
    current = put2(v2_stub, edit(BASIC_V2, Port=2526)).etag
    with pytest.raises(grpc.RpcError) as failure:
        if api == "v2":
            put2(v2_stub, edit(BASIC_V2, Port=2527), etag=stale)
        else:
            put1(v1_stub, edit(BASIC_V1, Port=2527), etag=stale)
    assert failure.value.code() == grpc.StatusCode.ABORTED
    reply = v2_stub.GetSmtp(v2.GetSmtpRequest())
    assert reply.etag == current and reply.profile.port == 2526


def test_twenty_concurrent_updates_with_one_etag_exactly_one_wins(v2_stub) -> None:
    etag = put2(v2_stub, BASIC_V2).etag

    def attempt(port: int):
        try:
            return put2(v2_stub, edit(BASIC_V2, Port=port), etag=etag)
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(3000, 3020)))
    winners = [o for o in outcomes if isinstance(o, v2.UpdateSmtpResponse)]
    losers = [o for o in outcomes if not isinstance(o, v2.UpdateSmtpResponse)]
    assert len(winners) == 1
    assert set(losers) == {grpc.StatusCode.ABORTED} and len(losers) == 19
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).profile.port == winners[0].profile.port


def test_concurrent_masked_updates_without_etag_all_land(v2_stub) -> None:
    """Masked updates read-merge-write; without a client etag they retry rather than lose fields."""
    put2(v2_stub, OAUTH_V2)
    fields = {"Scope": "a b", "Audience": "aud", "SenderName": "N", "Port": 2525, "UseSSL": False}

    def change(item):
        name, value = item
        doc = edit(OAUTH_V2, **{name: value})
        request = v2.UpdateSmtpRequest(profile=v2_profile(doc))
        request.update_mask.paths.append(name)
        return v2_stub.UpdateSmtp(request)

    with ThreadPoolExecutor(max_workers=len(fields)) as pool:
        list(pool.map(change, fields.items()))
    shown = get2(v2_stub)
    for name, value in fields.items():
        assert shown.get(name, False) == value


# --- a PUT of what GET returned: write-only secrets marked {"HasValue": true} ------------------


def _fingerprint(channel, field: str) -> str:
    stub = providers_grpc.SecretProviderServiceStub(channel)
    return stub.CheckSecret(providers_pb.CheckSecretRequest(profile_field=field)).fingerprint


def _inline_fingerprint(channel, value: str) -> str:
    stub = providers_grpc.SecretProviderServiceStub(channel)
    secret = secret_pb2.SecretObject(secret_value=value)
    return stub.CheckSecret(providers_pb.CheckSecretRequest(secret=secret)).fingerprint


@pytest.mark.parametrize("doc,field,value", [
    (BASIC_V2, "RelayPassword", "relay-password"),
    (OAUTH_V2, "ClientSecret", "client-secret-1"),
], ids=["basic", "oauth"])
def test_what_get_returned_put_back_with_its_etag_keeps_the_secret(channel, v2_stub, doc, field, value) -> None:
    put2(v2_stub, doc)
    read = v2_stub.GetSmtp(v2.GetSmtpRequest())
    assert as_json(read.profile)[field] == {"HasValue": True}
    edited = v2.SmtpProfile()
    edited.CopyFrom(read.profile)
    edited.sender_name = "Edited"
    reply = v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=edited, etag=read.etag))
    assert reply.profile.sender_name == "Edited"
    assert _fingerprint(channel, field) == _inline_fingerprint(channel, value)


HAS_VALUE_REFUSED = [
    ("no etag: the writer may never have seen this value", BASIC_V2, {}, False, "RelayPassword.HasValue", "etag"),
    ("the relay host changed", BASIC_V2, {"Host": "elsewhere.example.net"}, True, "RelayPassword.HasValue", "Host"),
    ("the relay port changed", BASIC_V2, {"Port": 2525}, True, "RelayPassword.HasValue", "Port"),
    ("TLS dropped for the relay", BASIC_V2, {"UseSSL": False}, True, "RelayPassword.HasValue", "UseSSL"),
    ("the token endpoint changed", OAUTH_V2, {"TokenEndpoint": "https://idp.example.net/token"}, True,
     "ClientSecret.HasValue", "TokenEndpoint"),
]


@pytest.mark.parametrize("reason,doc,changes,with_etag,field,says", HAS_VALUE_REFUSED, ids=[c[0] for c in HAS_VALUE_REFUSED])
def test_has_value_is_refused_where_the_secret_would_move_or_was_not_seen(
    v2_stub, reason, doc, changes, with_etag, field, says
) -> None:
    put2(v2_stub, doc)
    read = v2_stub.GetSmtp(v2.GetSmtpRequest())
    sent = {**as_json(read.profile), **changes}
    with pytest.raises(grpc.RpcError) as failure:
        put2(v2_stub, sent, etag=read.etag if with_etag else "")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = dict(violations(failure.value))
    assert field in found and says in found[field], found
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).etag == read.etag, "nothing stored"


def test_has_value_without_a_stored_value_is_refused(v2_stub) -> None:
    anonymous = edit(BASIC_V2, RelayAuthenticationType=0, RelayUsername=DROP, RelayPassword=DROP)
    etag = put2(v2_stub, anonymous).etag
    sent = edit(BASIC_V2, RelayPassword={"HasValue": True})
    with pytest.raises(grpc.RpcError) as failure:
        put2(v2_stub, sent, etag=etag)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RelayPassword.HasValue" in dict(violations(failure.value))


def test_has_value_with_a_stale_etag_is_aborted(v2_stub) -> None:
    put2(v2_stub, BASIC_V2)
    read = v2_stub.GetSmtp(v2.GetSmtpRequest())
    current = put2(v2_stub, edit(BASIC_V2, SenderName="Meanwhile")).etag
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=read.profile, etag=read.etag))
    assert failure.value.code() == grpc.StatusCode.ABORTED
    assert v2_stub.GetSmtp(v2.GetSmtpRequest()).etag == current


def test_a_candidate_profile_marked_has_value_is_not_tested_with_the_stored_secret(v2_stub) -> None:
    put2(v2_stub, BASIC_V2)
    read = v2_stub.GetSmtp(v2.GetSmtpRequest())
    with pytest.raises(grpc.RpcError) as failure:
        v2_stub.TestSmtp(v2.TestSmtpRequest(profile=read.profile, test_recipient="ops@example.com"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RelayPassword.HasValue" in dict(violations(failure.value))
