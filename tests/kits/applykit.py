"""Fixtures for apply-time tests (TestSmtp, ResolveSmtp): the running service wired to the real
SMTP kit, the real token endpoint and a real OpenBao, all on loopback.

Implicit TLS is chosen by the port (465), so `ImplicitSmtpServer` is the kit's SmtpServer listening
on port 465 of a loopback address of its own (127.x.y.z, picked per run: the whole 127/8 is
loopback on Linux), with a certificate that names that address. Everything else runs on port 0.
"""

from __future__ import annotations

import errno
import random
import shutil
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.oauthkit import TokenEndpoint
from tests.kits.smtpkit import SmtpServer
from tests.kits.support import ServerThread, short_dir
from tests.kits.testca import LOCAL_NAMES, TestPKI, make_pki

IMPLICIT_PORT = 465

# Planted values: each must never appear in a response, an error or a log line.
SENDER = "relay@example.com"
SENDER_NAME = "Example Relay"
RECIPIENT = "ops@example.org"
USER = "relay-user"
PASSWORD = "PLANTED-smtp-password-9f3c"
CLIENT_ID = "smtp-client"
CLIENT_SECRET = "PLANTED-client-secret-5d21"
SCOPE = "https://outlook.office365.com/.default"
AUDIENCE = "api://smtp-relay"
HEADER = ("X-Tenant", "tenant-42")

OK = v2.STEP_OUTCOME_OK
FAILED = v2.STEP_OUTCOME_FAILED
SKIPPED = v2.STEP_OUTCOME_SKIPPED
STEP_NAMES = ("resolve", "token", "connect", "tls", "auth", "send")


# --- network identities ---------------------------------------------------------------------


def _free_465_address() -> str:
    """A 127.x.y.z address whose port 465 can be bound right now."""
    rng = random.Random()
    for _ in range(50):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, IMPLICIT_PORT))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    continue
                raise
            return address
    raise RuntimeError("no loopback address with a free port 465")


@dataclass(frozen=True)
class Net:
    """The test CA (certificates valid for the local names and `implicit_host`) and the address
    implicit-TLS servers listen on (port 465)."""

    pki: TestPKI
    implicit_host: str


@pytest.fixture(scope="session")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    host = _free_465_address()
    pki = make_pki(tmp_path_factory.mktemp("apply-pki"), sans=(*LOCAL_NAMES, host))
    return Net(pki, host)


class ImplicitSmtpServer(SmtpServer):
    """The kit's implicit-TLS server, moved from its port-0 socket to `host`:465 before it starts."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__("implicit", host=host, **kwargs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            # Earlier servers' connections may linger in TIME_WAIT on this address and port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, IMPLICIT_PORT))
            sock.listen()
        except BaseException:
            sock.close()
            self._sock.close()
            raise
        self._sock.close()
        self._sock = sock
        self.port = IMPLICIT_PORT
        self._controller._sock = sock
        self._controller.port = IMPLICIT_PORT


def smtp_kit(net: Net, mode: str, **kwargs: Any) -> SmtpServer:
    """A kit server (use it with `with`): "implicit" on port 465, "starttls" and "plain" on port 0."""
    kwargs.setdefault("certs", net.pki.localhost)
    if mode == "implicit":
        return ImplicitSmtpServer(net.implicit_host, **kwargs)
    if mode == "plain":
        kwargs.pop("certs")
    return SmtpServer(mode, **kwargs)  # type: ignore[arg-type]


def token_endpoint(net: Net, **kwargs: Any) -> TokenEndpoint:
    """An HTTPS token endpoint (use it with `with`) knowing CLIENT_ID, certified by the test CA."""
    kwargs.setdefault("expires_in", 3600)
    return TokenEndpoint({CLIENT_ID: CLIENT_SECRET}, certfile=net.pki.localhost.cert,
                         keyfile=net.pki.localhost.key, **kwargs)


def bearer_check(idp: TokenEndpoint, user: str = SENDER):
    """XOAUTH2 check for the SMTP kit: the right user, and a live token with scope and audience."""
    return lambda u, token: u == user and idp.token_valid(token, scope=SCOPE, audience=AUDIENCE)


# --- profiles ---------------------------------------------------------------------------------


def _base(smtp: SmtpServer, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Id": 1,
        "Host": smtp.host,
        "Port": smtp.port,
        "SenderAccount": SENDER,
        "SenderName": SENDER_NAME,
        "UseSSL": smtp.mode != "plain",
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def anonymous(smtp: SmtpServer, **over: Any) -> dict[str, Any]:
    return _base(smtp, **{"RelayAuthenticationType": 0, **over})


def basic(smtp: SmtpServer, **over: Any) -> dict[str, Any]:
    return _base(smtp, **{"RelayAuthenticationType": 2, "RelayUsername": {"SecretValue": USER},
                          "RelayPassword": {"SecretValue": PASSWORD}, **over})


def oauth(smtp: SmtpServer, idp: TokenEndpoint, **over: Any) -> dict[str, Any]:
    return _base(smtp, **{
        "RelayAuthenticationType": 3, "ClientId": {"SecretValue": CLIENT_ID},
        "ClientSecret": {"SecretValue": CLIENT_SECRET}, "TokenEndpoint": idp.url, "Scope": SCOPE,
        "Audience": AUDIENCE, "RequestHeaders": [{"Name": HEADER[0], "Value": HEADER[1]}], **over})


def v2_profile(doc: dict[str, Any]) -> v2.SmtpProfile:
    return json_format.ParseDict(doc, v2.SmtpProfile())


def v1_profile(doc: dict[str, Any]) -> v1.SmtpProfile:
    return json_format.ParseDict(doc, v1.SmtpProfile())


# --- the service ------------------------------------------------------------------------------


class Service:
    """A running smtpconfig server (in-process) with stubs for every service."""

    def __init__(self, net: Net, **settings: Any) -> None:
        defaults = dict(ca_bundle=str(net.pki.ca), smtp_timeout=5.0, allow_plaintext_auth=False,
                        provider_timeout=3.0, provider_failure_ttl=0.2)
        defaults.update(settings)
        self.data_dir = short_dir("sa")
        self.server = ServerThread(self.data_dir, **defaults).start()
        self.channel = self.server.channel()
        self.v1 = v1_grpc.ConfigServiceStub(self.channel)
        self.v2 = v2_grpc.ConfigServiceStub(self.channel)
        self.providers = pb_grpc.SecretProviderServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def test(self, doc: dict[str, Any] | None, recipient: str = RECIPIENT) -> v2.TestSmtpResponse:
        request = v2.TestSmtpRequest(test_recipient=recipient)
        if doc is not None:
            request.profile.CopyFrom(v2_profile(doc))
        return self.v2.TestSmtp(request, timeout=30)

    def store(self, doc: dict[str, Any]) -> v2.UpdateSmtpResponse:
        return self.v2.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)), timeout=10)

    def stored(self) -> v2.GetSmtpResponse | None:
        """The stored profile as GetSmtp returns it, or None when none is stored yet."""
        try:
            return self.v2.GetSmtp(v2.GetSmtpRequest(), timeout=10)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def resolve(self) -> v2.ResolveSmtpResponse:
        return self.v2.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=30)

    def vault(self, bao, name: str) -> int:
        """A `vault` provider instance reading from `bao` with its root token."""
        instance = pb.ProviderInstance(name=name, provider_type="vault")
        for key, value in {"Host": bao.address, "Token": bao.root_token}.items():
            instance.initialization[key].value = value
        return self.providers.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider.id


def serve(net: Net, **settings: Any) -> Iterator[Service]:
    service = Service(net, **settings)
    try:
        yield service
    finally:
        service.close()


# --- reading results --------------------------------------------------------------------------


def outcomes(response: v2.TestSmtpResponse) -> list[tuple[str, str]]:
    """[(step name, outcome name)] in order, readable in an assertion diff."""
    return [(s.name, v2.StepOutcome.Name(s.outcome).removeprefix("STEP_OUTCOME_")) for s in response.steps]


def step(response: v2.TestSmtpResponse, name: str) -> v2.TestStep:
    found = [s for s in response.steps if s.name == name]
    assert len(found) == 1, f"step {name!r} listed {len(found)} times: {outcomes(response)}"
    return found[0]


def describe(response: v2.TestSmtpResponse) -> str:
    return "\n".join(f"{s.name}: {v2.StepOutcome.Name(s.outcome)} code={s.smtp_code} "
                     f"message={s.message!r} hint={s.hint!r}" for s in response.steps)


def leaks(blobs: Iterable[str | bytes], secrets: Iterable[str]) -> list[str]:
    """Which of `secrets` occur in any of `blobs` (as text or as UTF-8 bytes)."""
    found = []
    blobs = [b if isinstance(b, bytes) else b.encode("utf-8", "replace") for b in blobs]
    for secret in secrets:
        if secret and any(secret.encode() in blob for blob in blobs):
            found.append(secret[:8] + "...")
    return found


def serialized(message) -> list[str | bytes]:
    """A message in every form a caller could see: text, JSON and wire bytes."""
    return [str(message), json_format.MessageToJson(message), message.SerializeToString()]


def error_blobs(error: grpc.RpcError) -> list[str | bytes]:
    blobs: list[str | bytes] = [error.details() or "", repr(error), str(error)]
    for _key, value in error.trailing_metadata() or ():
        blobs.append(value if isinstance(value, bytes) else str(value))
    return blobs
