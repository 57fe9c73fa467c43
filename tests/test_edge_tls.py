"""Edge mode over mTLS: an edge that calls its central with a client certificate and no token.

The central listens with TLS and a client CA; the edge has upstream_ca_file, upstream_cert_file and
upstream_key_file. Checked: the edge follows and resolves; the central's audit names the edge by
its certificate identity (and the local caller, the edge being trusted); the certificate key's PEM
body shows in no response, trailer, error, log line or file of the edge's data directory."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from smtpconfig.api.auth import token_hash
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.calls import list_records
from tests.kits.edge import (
    ADMIN_TOKEN,
    APP_TOKEN,
    EDGE_PERMISSIONS,
    FILES,
    PASSWORD,
    PROFILE,
    Event,
)
from tests.kits.edge import auth as _auth
from tests.kits.edge import until as _until
from tests.kits.profiles import edit, v2_profile
from tests.kits.support import ServerThread, short_dir
from tests.kits.testca import TestCA

EDGE_URI = "spiffe://test/ns/mail/sa/edge-a"


@pytest.fixture
def root() -> Iterator[Path]:
    directory = short_dir("etls")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _pem_body(path: Path) -> str:
    """The base64 lines of a PEM file, joined: what a leak of the key would contain."""
    return "".join(line for line in path.read_text().splitlines() if line and not line.startswith("-----"))


def test_an_mtls_edge_is_named_by_its_certificate_and_never_shows_its_key(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca = TestCA(root / "ca")
    server_cert = ca.issue("central")
    edge_cert = ca.issue_client("edge", "edge-a", uris=(EDGE_URI,))
    admin_cert = ca.issue_client("admin", "admin-c")  # the central asks every caller for a certificate
    files = root / "files"
    files.mkdir()
    (files / "smtp-password").write_text(PASSWORD + "\n")
    central = ServerThread(
        root / "central", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
        tokens=(("admin-c", token_hash(ADMIN_TOKEN)),),
        policy=(("admin-c", ("*",)), (EDGE_URI, EDGE_PERMISSIONS)), edge_identities=(EDGE_URI,),
        providers=({"id": FILES, "name": "files", "type": "file", "initialization": {"Directory": str(files)}},),
        watch_progress_seconds=0.5,
    ).start()
    tls = grpc.ssl_channel_credentials(ca.path.read_bytes(), admin_cert.key.read_bytes(), admin_cert.cert.read_bytes())
    central_channel = grpc.secure_channel(central.target, tls)
    central_stub = v2_grpc.ConfigServiceStub(central_channel)
    edge = None
    try:
        central_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(PROFILE)), metadata=_auth(ADMIN_TOKEN), timeout=10)
        edge = ServerThread(
            root / "edge", upstream=(central.target,), upstream_ca_file=ca.path,
            upstream_cert_file=edge_cert.cert, upstream_key_file=edge_cert.key,
            tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
        ).start()
        edge_stub = v2_grpc.ConfigServiceStub(grpc.insecure_channel(edge.target))
        got, call = _until(lambda: edge_stub.GetSmtp.with_call(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5))
        assert got.profile.host == "smtp.example.com"
        stream = edge_stub.WatchSmtp(v2.WatchSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=30)
        assert next(stream).kind == Event.KIND_SNAPSHOT
        central_stub.UpdateSmtp(
            v2.UpdateSmtpRequest(profile=v2_profile(edit(PROFILE, Host="relay2.example.com"))),
            metadata=_auth(ADMIN_TOKEN), timeout=10,
        )
        change = next(e for e in stream if e.kind != Event.KIND_PROGRESS)
        assert change.kind == Event.KIND_CHANGE and change.profile.host == "relay2.example.com"
        stream.cancel()
        resolved, resolve_call = edge_stub.ResolveSmtp.with_call(
            v2.ResolveSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)
        assert resolved.credentials.password == PASSWORD
        with pytest.raises(grpc.RpcError) as refused:
            edge_stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(PROFILE)), metadata=_auth(APP_TOKEN), timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        records = [r for r in list_records(central_channel, ADMIN_TOKEN) if r.method == "v2.ConfigService/ResolveSmtp"]
        assert [r.identity for r in records] == [f"{EDGE_URI} for billing-app"]
        with grpc.insecure_channel(edge.target) as channel:
            edge_records = str(list_records(channel, APP_TOKEN))
    finally:
        if edge is not None:
            edge.stop()
        central.stop()
        central_channel.close()
    key = _pem_body(edge_cert.key)
    shown = (str(got), str(call.trailing_metadata()), str(resolved), str(resolve_call.trailing_metadata()),
             str(change), refused.value.details() or "", str(refused.value.trailing_metadata()), edge_records,
             caplog.text)
    for text in shown:
        assert key not in text and "PRIVATE KEY" not in text
    for path in (root / "edge").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
            assert b"PRIVATE KEY" not in path.read_bytes(), path
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_an_edge_whose_certificate_is_refused_says_so_answers_unavailable_and_takes_a_renewed_one(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca, other = TestCA(root / "ca"), TestCA(root / "other", name="another CA")
    server_cert = ca.issue("central")
    stranger = other.issue_client("edge", "edge-a", uris=(EDGE_URI,))
    keys = [_pem_body(stranger.key)]
    central = ServerThread(
        root / "central", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
        policy=((EDGE_URI, EDGE_PERMISSIONS),),
    ).start()
    edge = None
    try:
        edge = ServerThread(
            root / "edge", upstream=(central.target,), upstream_ca_file=ca.path,
            upstream_cert_file=stranger.cert, upstream_key_file=stranger.key,
            tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
        ).start()
        _until(lambda: any(r.getMessage().startswith(f"upstream {central.target} cannot be followed")
                           for r in caplog.records), timeout=10)
        edge_stub = v2_grpc.ConfigServiceStub(grpc.insecure_channel(edge.target))
        with pytest.raises(grpc.RpcError) as raised:  # not NOT_FOUND: there may well be a profile
            edge_stub.GetSmtp(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # The certificate is renewed in place (as cert-manager does): used without a restart.
        renewed = ca.issue_client("renewed", "edge-a", uris=(EDGE_URI,))
        keys.append(_pem_body(renewed.key))
        os.replace(renewed.key, stranger.key)
        os.replace(renewed.cert, stranger.cert)
        _until(lambda: any(r.getMessage() == f"following upstream {central.target}" for r in caplog.records))
        with pytest.raises(grpc.RpcError) as reached:  # the central has no profile
            edge_stub.GetSmtp(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)
        assert reached.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        if edge is not None:
            edge.stop()
        central.stop()
    for key in keys:
        assert key not in caplog.text and "PRIVATE KEY" not in caplog.text
