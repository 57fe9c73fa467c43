"""Shared fixtures: a real server on port 0 with a real SQLite file, and stubs over a real channel."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.openbao import openbao_server  # noqa: F401  (a fixture, offered to every test module)
from tests.support import ServerThread, short_dir

# A provider instance for reference tests, declared as an operator would: the first-party Vault
# type (which secret, which key). Validation never dials it, so its Host need not answer, and its
# JWT login file need not exist (a secret literal cannot be declared in the config file).
TEST_PROVIDER: dict[str, Any] = {
    "id": 7,
    "name": "test-vault",
    "type": "vault",
    "initialization": {"Host": "https://127.0.0.1:1", "AuthMethod": "jwt", "Role": "smtp",
                       "JwtFile": "/nonexistent/jwt"},
}

BASIC_V2: dict[str, Any] = {
    "Id": 1,
    "Host": "smtp.example.com",
    "Port": 587,
    "RelayAuthenticationType": 2,
    "RelayUsername": {"SecretValue": "relay-user"},
    "RelayPassword": {"SecretValue": "relay-password"},
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": True,
}

OAUTH_V2: dict[str, Any] = {
    "Host": "smtp.office365.com",
    "Port": 587,
    "RelayAuthenticationType": 3,
    "ClientId": {"SecretValue": "client-id-1"},
    "ClientSecret": {"SecretValue": "client-secret-1"},
    "TokenEndpoint": "https://login.example.com/tenant/oauth2/v2.0/token",
    "Scope": "https://outlook.office365.com/.default",
    "Audience": "api://smtp",
    "RequestHeaders": [{"Name": "X-Tenant", "Value": "t1"}],
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": True,
}

BASIC_V1: dict[str, Any] = {
    "Id": 1,
    "Host": "smtp.example.com",
    "Port": 25,
    "RelayAuthenticationType": 2,
    "RelayUsername": "relay-user",
    "RelayPassword": "relay-password",
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": False,
}


def v2_profile(doc: dict[str, Any]) -> v2.SmtpProfile:
    return json_format.ParseDict(doc, v2.SmtpProfile())


def v1_profile(doc: dict[str, Any]) -> v1.SmtpProfile:
    return json_format.ParseDict(doc, v1.SmtpProfile())


def as_json(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, use_integers_for_enums=True)


def _serve(**settings: Any) -> Iterator[ServerThread]:
    data_dir = short_dir()
    server = ServerThread(data_dir, **settings).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The embedded default: no provider instances exist."""
    yield from _serve()


@pytest.fixture
def server_with_provider() -> Iterator[ServerThread]:
    """A server that knows provider instance 7 (see TEST_PROVIDER)."""
    yield from _serve(providers=(TEST_PROVIDER,))


@pytest.fixture
def channel(server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture
def v1_stub(channel) -> v1_grpc.ConfigServiceStub:
    return v1_grpc.ConfigServiceStub(channel)


@pytest.fixture
def v2_stub(channel) -> v2_grpc.ConfigServiceStub:
    return v2_grpc.ConfigServiceStub(channel)
