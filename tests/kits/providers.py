"""Provider instances and CheckSecret through a SecretProviderService stub: a `vault` instance on a
real OpenBao, a check of a provider reference, and the fingerprint the service gives a value."""

from __future__ import annotations

from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from tests.kits.openbao import OpenBao


def vault_instance(stub, bao: OpenBao, name: str = "bao", **init: str) -> int:
    """Create a `vault` instance reading from `bao` with its root token (unless `init` says
    otherwise); its id."""
    instance = pb.ProviderInstance(name=name, provider_type="vault")
    values = {"Host": bao.address, "Token": bao.root_token, **init}
    for key, value in values.items():
        instance.initialization[key].value = value
    return stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider.id


def check(stub, provider: int, **params: str) -> pb.CheckSecretResponse:
    return stub.CheckSecret(pb.CheckSecretRequest(secret=secret_pb2.SecretObject(provider=provider, parameters=params)))


def fingerprint_of(stub, value: str) -> str:
    """The fingerprint CheckSecret reports for `value` typed inline."""
    return stub.CheckSecret(pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=value))).fingerprint
