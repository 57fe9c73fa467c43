"""Planted secret values never appear in the database files, any response, any error, or the log."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from smtpconfig.core.secret import Secret
from smtpconfig.domain.crypto import Sealer
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.profiles import BASIC_V1, BASIC_V2, OAUTH_V2, edit, v1_profile, v2_profile
from tests.kits.support import ServerProcess, short_dir

PASSWORD = "PLANTED-relay-pässword-7f3a"
CLIENT_SECRET = "PLANTED-client-secret-91bd"
V1_PASSWORD = "PLANTED-v1-password-c0de"
PLANTED = (PASSWORD, CLIENT_SECRET, V1_PASSWORD)


def _files_under(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _assert_clean(where: str, data: bytes | str) -> None:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    for secret in PLANTED:
        for form in (secret.encode("utf-8"), secret.encode("utf-16-le")):
            assert form not in blob, f"planted secret found in {where}"


def test_planted_secrets_never_leave_the_service() -> None:
    data_dir = short_dir() / "data"
    server = ServerProcess(data_dir, "--log-level", "debug").start()
    seen: list[tuple[str, bytes | str]] = []
    try:
        with server.channel() as channel:
            s2, s1 = v2_grpc.ConfigServiceStub(channel), v1_grpc.ConfigServiceStub(channel)
            basic = edit(BASIC_V2, RelayPassword={"SecretValue": PASSWORD})
            oauth = edit(OAUTH_V2, ClientSecret={"SecretValue": CLIENT_SECRET})
            seen.append(("v2 update", s2.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(basic))).SerializeToString()))
            seen.append(("v2 get", s2.GetSmtp(v2.GetSmtpRequest()).SerializeToString()))
            seen.append(("v1 get", s1.GetSmtp(v1.GetSmtpRequest()).SerializeToString()))
            seen.append(("v2 oauth update", s2.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(oauth))).SerializeToString()))
            seen.append(("v2 get oauth", s2.GetSmtp(v2.GetSmtpRequest()).SerializeToString()))
            v1_doc = edit(BASIC_V1, RelayPassword=V1_PASSWORD)
            seen.append(("v1 update", s1.UpdateSmtp(v1.UpdateSmtpRequest(profile=v1_profile(v1_doc))).SerializeToString()))

            # Rejected requests carrying the secrets: the errors must not quote them.
            bad_requests = [
                (s2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(basic, Host="bad host")))),
                (s2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(
                    edit(basic, RelayPassword={"SecretValue": PASSWORD, "Provider": 3})))),
                (s2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(
                    edit(oauth, ClientSecret={"SecretValue": CLIENT_SECRET * 3000})))),
                (s2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(
                    edit(basic, RelayPassword={"SecretValue": PASSWORD, "Parameters": {"Key": PASSWORD}})))),
                (s2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(basic), etag="stale-etag")),
                (s1.UpdateSmtp, v1.UpdateSmtpRequest(profile=v1_profile(edit(v1_doc, RelayAuthenticationType=3)))),
                (s1.UpdateSmtp, v1.UpdateSmtpRequest(profile=v1_profile(edit(v1_doc, Id=9)))),
            ]
            for call, request in bad_requests:
                with pytest.raises(grpc.RpcError) as failure:
                    call(request)
                error = failure.value
                seen.append(("error details", error.details() or ""))
                metadata = b"".join(v if isinstance(v, bytes) else v.encode() for _, v in error.trailing_metadata())
                seen.append(("error metadata", metadata))
                seen.append(("error repr", repr(error)))
        for path, content in _files_under(data_dir).items():
            if not path.endswith(".sock"):
                seen.append((f"file {path} (running)", content))
    finally:
        assert server.terminate() == 0
    for path, content in _files_under(data_dir).items():
        seen.append((f"file {path} (stopped)", content))
    seen.append(("server log", server.log()))
    assert "profile updated" in server.log()  # the log was captured and has content
    assert "UpdateSmtp refused: INVALID_ARGUMENT" in server.log()  # rejected requests are logged too
    for where, content in seen:
        _assert_clean(where, content)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_secret_value_type_never_prints() -> None:
    secret = Secret(PASSWORD)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r:>40}", "%s %r" % (secret, secret), repr([secret])]  # noqa: UP031 (%-formatting is a path under test)
    for text in shown:
        _assert_clean("Secret formatting", text)
    assert secret == Secret(PASSWORD) and secret != Secret(PASSWORD + "x")
    assert secret.reveal() == PASSWORD
    with pytest.raises(TypeError):
        hash(secret)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_sealed_value_is_bound_to_its_key_and_place() -> None:
    sealer = Sealer(b"k" * 32)
    token = sealer.seal(Secret(PASSWORD), "smtp/profile/1#RelayPassword")
    _assert_clean("sealed token", token)
    assert sealer.open(token, "smtp/profile/1#RelayPassword") == Secret(PASSWORD)
    from smtpconfig.domain.crypto import KeyProblem

    with pytest.raises(KeyProblem, match="failed authentication"):
        sealer.open(token, "smtp/profile/1#ClientSecret")  # moved to another field
    with pytest.raises(KeyProblem, match="encrypted with key"):
        Sealer(b"x" * 32).open(token, "smtp/profile/1#RelayPassword")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(KeyProblem):
        sealer.open(tampered, "smtp/profile/1#RelayPassword")
