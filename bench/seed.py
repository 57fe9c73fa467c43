"""What the service answers during the benchmark: a realistic stored profile, a file secret, and
the provider instances behind them, all set up through the API exactly as a client would.

GetSmtp on an empty store measures an error path, not the read path clients use. So before
measuring, the benchmark stores a typical submission relay (Basic auth with inline credentials,
port 587, TLS) through UpdateSmtp and reads it back once: the size of that GetSmtp response is what
the echo servers are sent, so every target returns the same bytes.

CheckSecret is measured on a `file` provider instance whose Directory is a temporary directory
holding `smtp-password`. It is called twice before measuring: the first call reads the file, the
second must come from the cache, and its size is what the echo servers are sent for that suite.

ResolveSmtp is measured on the apply service, another process, so GetSmtp's profile stays as it is:
there the stored profile has an inline RelayUsername and a RelayPassword that references a `file`
provider instance of its own on the same directory. ResolveSmtp is called twice, then CheckSecret
of the password's reference must say Cached: the resolver's cache holds what ResolveSmtp resolved.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc

from bench import PLAINTEXT, BenchError, Transport, authorized_channel
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as providers_grpc

_SERVICE = v2.DESCRIPTOR.services_by_name["ConfigService"]
GETSMTP_PATH = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['GetSmtp'].name}"
# The serialized empty GetSmtpRequest (zero bytes), sent as-is on every measured call.
GETSMTP_REQUEST = v2.GetSmtpRequest().SerializeToString()
_PROVIDERS = providers_pb.DESCRIPTOR.services_by_name["SecretProviderService"]
CHECKSECRET_PATH = f"/{_PROVIDERS.full_name}/{_PROVIDERS.methods_by_name['CheckSecret'].name}"
RESOLVESMTP_PATH = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['ResolveSmtp'].name}"
RESOLVESMTP_REQUEST = v2.ResolveSmtpRequest().SerializeToString()  # empty, like GetSmtp's
SECRET_FILE = "smtp-password"
SECRET_VALUE = "bench-File-Password-8d41c09e"  # the file holds it plus a newline, which is stripped

TIMEOUT = 10.0


def relay_profile(password: secret_pb2.SecretObject | None = None) -> v2.SmtpProfile:
    """The stored profile; `password` replaces the inline RelayPassword (the apply service's)."""
    return v2.SmtpProfile(
        id=1,
        host="smtp.example.com",
        port=587,
        relay_authentication_type=v2.RELAY_AUTHENTICATION_TYPE_BASIC,
        relay_username=secret_pb2.SecretObject(secret_value="relay@example.com"),
        relay_password=password or secret_pb2.SecretObject(secret_value="bench-Password-3f9c2a71e0"),
        sender_account="relay@example.com",
        sender_name="Relay",
        use_ssl=True,
    )


def _connected(target: str) -> grpc.Channel:
    channel = authorized_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        channel.close()
        raise BenchError(f"the service at {target} did not accept a connection in {TIMEOUT:.0f}s") from None
    return channel


def create_provider(target: str, name: str, provider_type: str, initialization: dict[str, str]) -> int:
    """Create a provider instance through CreateProvider; return its Id."""
    instance = providers_pb.ProviderInstance(name=name, provider_type=provider_type)
    for key, value in initialization.items():
        instance.initialization[key].value = value
    try:
        with _connected(target) as channel:
            created = providers_grpc.SecretProviderServiceStub(channel).CreateProvider(
                providers_pb.CreateProviderRequest(provider=instance), timeout=TIMEOUT
            )
    except grpc.RpcError as error:
        raise BenchError(
            f"creating the {provider_type} provider failed: {error.code().name}: {error.details()}"
        ) from None
    return created.provider.id


def check_secret_request(provider: int, **parameters: str) -> bytes:
    """A serialized CheckSecretRequest for a reference to `provider` with these parameters."""
    secret = secret_pb2.SecretObject(provider=provider, parameters=parameters)
    return providers_pb.CheckSecretRequest(secret=secret).SerializeToString()


def warm_file_secret(target: str, directory: Path) -> tuple[bytes, int]:
    """Put `smtp-password` in `directory`, create a `file` provider instance on it and resolve it
    until the service answers from its cache; return the request and the cached response's size."""
    _write_secret(directory)
    request = check_secret_request(create_provider(target, "bench-file", "file", {"Directory": str(directory)}),
                                   File=SECRET_FILE)
    try:
        with _connected(target) as channel:
            call = channel.unary_unary(CHECKSECRET_PATH)
            first = providers_pb.CheckSecretResponse.FromString(call(request, timeout=TIMEOUT))
            raw = call(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        raise BenchError(f"CheckSecret of the file secret failed: {error.code().name}: {error.details()}") from None
    warm = providers_pb.CheckSecretResponse.FromString(raw)
    if not (first.success and warm.success and warm.cached and warm.provider_type == "file"):
        raise BenchError(f"CheckSecret did not answer the file secret from its cache: {warm}")
    return request, len(raw)


def _write_secret(directory: Path) -> None:
    path = directory / SECRET_FILE
    if path.exists():
        return
    path.write_text(SECRET_VALUE + "\n")
    # Older than the provider's "racy" window, so it also keeps its own stat-checked copy.
    past = time.time() - 60
    os.utime(path, (past, past))


def store_resolving_profile(target: str, directory: Path) -> int:
    """On the apply service at `target`: a `file` provider instance on `directory`, the profile
    whose RelayPassword references it, and ResolveSmtp until it answers from the resolver's cache;
    return the size of ResolveSmtp's (warm) response."""
    _write_secret(directory)
    provider = create_provider(target, "bench-file", "file", {"Directory": str(directory)})
    password = secret_pb2.SecretObject(provider=provider, parameters={"File": SECRET_FILE})
    try:
        with _connected(target) as channel:
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=relay_profile(password)), timeout=TIMEOUT
            )
            resolve = channel.unary_unary(RESOLVESMTP_PATH)
            resolve(RESOLVESMTP_REQUEST, timeout=TIMEOUT)
            raw = resolve(RESOLVESMTP_REQUEST, timeout=TIMEOUT)
            check = providers_pb.CheckSecretRequest(secret=password).SerializeToString()
            checked = providers_pb.CheckSecretResponse.FromString(
                channel.unary_unary(CHECKSECRET_PATH)(check, timeout=TIMEOUT)
            )
    except grpc.RpcError as error:
        raise BenchError(f"seeding ResolveSmtp failed: {error.code().name}: {error.details()}") from None
    credentials = v2.ResolveSmtpResponse.FromString(raw).credentials
    if (credentials.username, credentials.password) != ("relay@example.com", SECRET_VALUE):
        raise BenchError("ResolveSmtp did not return the inline username and the file's password")
    if not (checked.success and checked.cached):
        raise BenchError(f"the resolver did not cache what ResolveSmtp resolved: {checked}")
    return len(raw)


def store_with_password(target: str, provider: int, parameters: dict[str, str]) -> None:
    """Store on the service at `target` the profile whose RelayPassword references `provider` with
    these parameters (the edge phase's central)."""
    password = secret_pb2.SecretObject(provider=provider, parameters=parameters)
    try:
        with _connected(target) as channel:
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=relay_profile(password)), timeout=TIMEOUT
            )
    except grpc.RpcError as error:
        raise BenchError(f"storing the edge phase's profile failed: {error.code().name}: {error.details()}") from None


def store_profile(target: str, transport: Transport = PLAINTEXT) -> int:
    """Store the profile on the service at `target`, reached over `transport`; return GetSmtp's
    response size in bytes."""
    try:
        with authorized_channel(target, transport) as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=relay_profile()), timeout=TIMEOUT
            )
            raw = channel.unary_unary(GETSMTP_PATH)(GETSMTP_REQUEST, timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        raise BenchError(f"the service at {target} did not accept a connection in {TIMEOUT:.0f}s") from None
    except grpc.RpcError as error:
        raise BenchError(f"storing the benchmark profile failed: {error.code().name}: {error.details()}") from None
    stored = v2.GetSmtpResponse.FromString(raw)
    if stored.profile.host != "smtp.example.com" or not stored.profile.relay_username.secret_value:
        raise BenchError(f"GetSmtp did not return the stored profile: {stored}")
    return len(raw)


def answer(target: str, path: str, request: bytes) -> bytes:
    """The service's answer to `request` on `path`, as bytes: what an echo standing in for it sends."""
    try:
        with _connected(target) as channel:
            return channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        raise BenchError(f"{path} failed: {error.code().name}: {error.details()}") from None


# The methods `bench.profile` and `bench.stages` measure one at a time, by name, and their paths.
METHOD_PATHS = {"GetSmtp": GETSMTP_PATH, "CheckSecret": CHECKSECRET_PATH, "ResolveSmtp": RESOLVESMTP_PATH}


def seed_method(method: str, target: str, directory: Path) -> tuple[str, bytes, int]:
    """Set the service at `target` up for `method` (one of `METHOD_PATHS`) and warm it: GetSmtp the
    stored profile (`store_profile`), CheckSecret a file secret in `directory` (`warm_file_secret`),
    ResolveSmtp the profile resolving from it (`store_resolving_profile`). Return what its calls
    send, path and request, and the size of its answer."""
    if method == "GetSmtp":
        return GETSMTP_PATH, GETSMTP_REQUEST, store_profile(target)
    if method == "CheckSecret":
        request, size = warm_file_secret(target, directory)
        return CHECKSECRET_PATH, request, size
    if method == "ResolveSmtp":
        return RESOLVESMTP_PATH, RESOLVESMTP_REQUEST, store_resolving_profile(target, directory)
    raise ValueError(f"no seeding for {method!r}; choose from {', '.join(METHOD_PATHS)}")
