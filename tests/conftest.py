"""Shared fixtures: a real server on port 0 with a real SQLite file, and stubs over a real channel.

The kits that offer fixtures to every test module are loaded below as pytest plugins; helpers and
profile documents are imported from `tests.kits`, never from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.support import ServerThread, serving

pytest_plugins = [
    "tests.kits.openbao",  # openbao_server: one real OpenBao for the run
    "tests.kits.applykit",  # net: the test CA and the port-465 address of the apply-time tests
    "tests.kits.etcd",  # etcd_cluster: one real 3-member etcd for the run; own_etcd_cluster per test
    "tests.kits.leaks",  # a task asyncio destroys while still pending fails the run, named
]

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


def _serve(**settings: Any) -> Iterator[ServerThread]:
    yield from serving(**settings)


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
