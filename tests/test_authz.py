"""Who may call what: every RPC of every service, for a token caller, an mTLS caller and a Unix
socket caller, against real servers over real channels.

For each RPC and each kind of caller: no identity is UNAUTHENTICATED (for certificates: no
certificate fails the handshake, and a certificate the policy does not name is PERMISSION_DENIED),
an identity holding every permission but the one the RPC needs is PERMISSION_DENIED and changes
nothing, and an identity holding only that permission gets OK. The RPCs are enumerated from the
generated descriptors, so a new RPC without a case here fails.

Servers, each started once for the module:
- "token": plaintext loopback TCP with bearer tokens, plus a Unix socket with no
  `unix_socket_identity` (the Unix "no identity" case);
- "mtls": TLS with client certificates from a test CA, policy keyed by certificate names;
- "unix": a Unix socket's identity is one per server, so one small server per grant (only P, every
  permission but P) for each permission.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smtpconfig.api.audit_servicer import AuditServiceV2
from smtpconfig.api.auth import Authenticator, Policy, new_token, token_hash
from smtpconfig.api.provider_servicer import SecretProviderServiceV2
from smtpconfig.api.servicers import ConfigServiceV1, ConfigServiceV2
from smtpconfig.core.errors import Unauthenticated
from smtpconfig.core.permissions import PERMISSIONS
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from tests.kits.profiles import v1_profile, v2_profile
from tests.kits.smtpkit import SmtpServer
from tests.kits.support import ServerThread, short_dir, token_channel
from tests.kits.testca import TestCA

PASSWORD = "PLANTED-authz-smtp-password-41c7"
FILE_SECRET = "PLANTED-authz-file-secret-8b02"
RECIPIENT = "ops@example.org"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

# --- the RPCs, from the generated descriptors -------------------------------------------------

SERVICES = (
    (v1.DESCRIPTOR.services_by_name["ConfigService"], ConfigServiceV1),
    (v2.DESCRIPTOR.services_by_name["ConfigService"], ConfigServiceV2),
    (providers_pb.DESCRIPTOR.services_by_name["SecretProviderService"], SecretProviderServiceV2),
    (audit_pb.DESCRIPTOR.services_by_name["AuditService"], AuditServiceV2),
)
METHODS = {f"{service.full_name}/{method.name}": method for service, _ in SERVICES for method in service.methods}
SERVICERS = {f"{service.full_name}/{method.name}": servicer for service, servicer in SERVICES for method in service.methods}
RPCS = sorted(METHODS)
RPC_IDS = [rpc.removeprefix("smtpconfig.") for rpc in RPCS]

EXPECTED_PERMISSION = {
    "smtpconfig.v1.ConfigService/GetSmtp": "smtp:read",
    "smtpconfig.v1.ConfigService/UpdateSmtp": "smtp:modify",
    "smtpconfig.v1.ConfigService/TestSmtp": "smtp:test",
    "smtpconfig.v2.ConfigService/GetSmtp": "smtp:read",
    "smtpconfig.v2.ConfigService/UpdateSmtp": "smtp:modify",
    "smtpconfig.v2.ConfigService/TestSmtp": "smtp:test",
    "smtpconfig.v2.ConfigService/ResolveSmtp": "smtp:resolve",
    "smtpconfig.v2.ConfigService/WatchSmtp": "smtp:watch",
    "smtpconfig.v2.SecretProviderService/ListProviderTypes": "providers:read",
    "smtpconfig.v2.SecretProviderService/ListPlugins": "providers:read",
    "smtpconfig.v2.SecretProviderService/ListProviders": "providers:read",
    "smtpconfig.v2.SecretProviderService/GetProvider": "providers:read",
    "smtpconfig.v2.SecretProviderService/CreateProvider": "providers:modify",
    "smtpconfig.v2.SecretProviderService/UpdateProvider": "providers:modify",
    "smtpconfig.v2.SecretProviderService/DeleteProvider": "providers:modify",
    "smtpconfig.v2.SecretProviderService/FlushCache": "providers:modify",
    "smtpconfig.v2.SecretProviderService/CheckSecret": "providers:read",
    "smtpconfig.v2.AuditService/ListAuditRecords": "audit:read",
}


def slug(permission: str) -> str:
    """A permission as part of a plain identity name (which has no colons)."""
    return permission.replace(":", ".")


def spiffe(name: str) -> str:
    return f"spiffe://test/ns/{name}"


# --- what the servers hold ----------------------------------------------------------------------


@dataclass
class Deployment:
    """One running server, an admin channel to it, and the state the admin set up."""

    server: ServerThread
    admin: grpc.Channel
    directory: Path  # the `file` provider's Directory
    smtp_port: int
    files: int = 0  # a `file` provider instance that stays
    doomed: int = 0  # a `file` provider instance the OK DeleteProvider case removes


def profile_doc(port: int) -> dict[str, Any]:
    return {
        "Host": "localhost", "Port": port, "RelayAuthenticationType": 2,
        "RelayUsername": {"SecretValue": "relay"}, "RelayPassword": {"SecretValue": PASSWORD},
        "SenderAccount": "relay@example.com", "SenderName": "Relay", "UseSSL": True,
    }


def v1_doc(port: int) -> dict[str, Any]:
    doc = profile_doc(port)
    doc.update(Id=1, RelayUsername="relay", RelayPassword=PASSWORD)
    return doc


def file_instance(name: str, directory: Path) -> providers_pb.ProviderInstance:
    instance = providers_pb.ProviderInstance(name=name, provider_type="file")
    instance.initialization["Directory"].value = str(directory)
    return instance


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    response: Any
    trailers: dict[str, str]


def invoke(channel: grpc.Channel, rpc: str, request, metadata=(), timeout: float = 30) -> Outcome:
    """One call of `rpc` ("package.Service/Method"), whatever its outcome. Of a server stream, its
    first message is the response, then the stream is cancelled (its trailers are then unknown)."""
    method = METHODS[rpc]
    if method.server_streaming:
        return _first_of_stream(channel, rpc, request, metadata, timeout)
    call = channel.unary_unary(
        f"/{rpc}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=GetMessageClass(method.output_type).FromString,
    )
    try:
        response, state = call.with_call(request, metadata=tuple(metadata), timeout=timeout)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", None, dict(error.trailing_metadata() or ()))
    return Outcome(state.code(), state.details() or "", response, dict(state.trailing_metadata() or ()))


def _first_of_stream(channel: grpc.Channel, rpc: str, request, metadata, timeout: float) -> Outcome:
    stream = channel.unary_stream(
        f"/{rpc}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=GetMessageClass(METHODS[rpc].output_type).FromString,
    )(request, metadata=tuple(metadata), timeout=timeout)
    try:
        first = next(stream)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", None, dict(error.trailing_metadata() or ()))
    stream.cancel()
    return Outcome(OK, "", first, {})


def admin_call(deployment: Deployment, rpc: str, request):
    outcome = invoke(deployment.admin, rpc, request)
    assert outcome.code == OK, f"admin {rpc}: {outcome.code.name} {outcome.details}"
    return outcome.response


def set_up(deployment: Deployment) -> Deployment:
    """A stored profile pointing at the real SMTP server, and two `file` provider instances."""
    admin_call(deployment, "smtpconfig.v2.ConfigService/UpdateSmtp",
               v2.UpdateSmtpRequest(profile=v2_profile(profile_doc(deployment.smtp_port))))
    create = "smtpconfig.v2.SecretProviderService/CreateProvider"
    deployment.files = admin_call(deployment, create, providers_pb.CreateProviderRequest(
        provider=file_instance("files", deployment.directory))).provider.id
    deployment.doomed = admin_call(deployment, create, providers_pb.CreateProviderRequest(
        provider=file_instance("doomed", deployment.directory))).provider.id
    return deployment


def snapshot(deployment: Deployment) -> tuple:
    """What a refused call must leave as it was: the profile's revision and every instance's."""
    profile = admin_call(deployment, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest())
    instances = admin_call(deployment, "smtpconfig.v2.SecretProviderService/ListProviders",
                           providers_pb.ListProvidersRequest()).providers
    return profile.etag, tuple((p.id, p.name, p.etag) for p in instances)


# --- one valid request per RPC --------------------------------------------------------------------


def _update_provider(d: Deployment) -> providers_pb.UpdateProviderRequest:
    request = providers_pb.UpdateProviderRequest(provider=providers_pb.ProviderInstance(id=d.files, name="files"))
    request.update_mask.paths.append("Name")
    return request


def _flush_after_a_check(d: Deployment) -> providers_pb.FlushCacheRequest:
    """A flush of the `file` instance with one value cached, so an OK answer shows it dropped."""
    admin_call(d, "smtpconfig.v2.SecretProviderService/CheckSecret", providers_pb.CheckSecretRequest(
        secret=secret_pb2.SecretObject(provider=d.files, parameters={"File": "smtp-password"})))
    return providers_pb.FlushCacheRequest(provider=d.files)


REQUESTS: dict[str, Callable[[Deployment], Any]] = {
    "smtpconfig.v1.ConfigService/GetSmtp": lambda d: v1.GetSmtpRequest(),
    "smtpconfig.v1.ConfigService/UpdateSmtp": lambda d: v1.UpdateSmtpRequest(profile=v1_profile(v1_doc(d.smtp_port))),
    "smtpconfig.v1.ConfigService/TestSmtp": lambda d: v1.TestSmtpRequest(test_recipient=RECIPIENT),
    "smtpconfig.v2.ConfigService/GetSmtp": lambda d: v2.GetSmtpRequest(),
    "smtpconfig.v2.ConfigService/UpdateSmtp": lambda d: v2.UpdateSmtpRequest(profile=v2_profile(profile_doc(d.smtp_port))),
    "smtpconfig.v2.ConfigService/TestSmtp": lambda d: v2.TestSmtpRequest(test_recipient=RECIPIENT),
    "smtpconfig.v2.ConfigService/ResolveSmtp": lambda d: v2.ResolveSmtpRequest(),
    "smtpconfig.v2.ConfigService/WatchSmtp": lambda d: v2.WatchSmtpRequest(),
    "smtpconfig.v2.SecretProviderService/ListProviderTypes": lambda d: providers_pb.ListProviderTypesRequest(),
    "smtpconfig.v2.SecretProviderService/ListPlugins": lambda d: providers_pb.ListPluginsRequest(),
    "smtpconfig.v2.SecretProviderService/ListProviders": lambda d: providers_pb.ListProvidersRequest(),
    "smtpconfig.v2.SecretProviderService/GetProvider": lambda d: providers_pb.GetProviderRequest(id=d.files),
    "smtpconfig.v2.SecretProviderService/CreateProvider": lambda d: providers_pb.CreateProviderRequest(
        provider=file_instance(f"made-{uuid.uuid4().hex[:12]}", d.directory)),
    "smtpconfig.v2.SecretProviderService/UpdateProvider": _update_provider,
    "smtpconfig.v2.SecretProviderService/DeleteProvider": lambda d: providers_pb.DeleteProviderRequest(id=d.doomed),
    "smtpconfig.v2.SecretProviderService/FlushCache": _flush_after_a_check,
    "smtpconfig.v2.SecretProviderService/CheckSecret": lambda d: providers_pb.CheckSecretRequest(
        secret=secret_pb2.SecretObject(provider=d.files, parameters={"File": "smtp-password"})),
    "smtpconfig.v2.AuditService/ListAuditRecords": lambda d: audit_pb.ListAuditRecordsRequest(),
}


def _deleted(response, d: Deployment) -> None:
    gone = invoke(d.admin, "smtpconfig.v2.SecretProviderService/GetProvider", providers_pb.GetProviderRequest(id=d.doomed))
    assert gone.code == grpc.StatusCode.NOT_FOUND


def _created(response, d: Deployment) -> None:
    assert response.provider.id > 0
    got = admin_call(d, "smtpconfig.v2.SecretProviderService/GetProvider",
                     providers_pb.GetProviderRequest(id=response.provider.id))
    assert got.provider.name == response.provider.name


# What an OK answer must also show, so that "OK" means the RPC did its work.
CHECKS: dict[str, Callable[[Any, Deployment], None]] = {
    "smtpconfig.v1.ConfigService/GetSmtp": lambda r, d: _expect(r.profile.port == d.smtp_port),
    "smtpconfig.v1.ConfigService/TestSmtp": lambda r, d: _expect(r.test_recipient == RECIPIENT),
    "smtpconfig.v2.ConfigService/GetSmtp": lambda r, d: _expect(r.profile.port == d.smtp_port),
    "smtpconfig.v2.ConfigService/TestSmtp": lambda r, d: _expect(r.success, str(r.steps)),
    "smtpconfig.v2.ConfigService/ResolveSmtp": lambda r, d: _expect(
        (r.credentials.username, r.credentials.password) == ("relay", PASSWORD)),
    # The snapshot shows the profile as GetSmtp does: the password marked, its value never sent.
    "smtpconfig.v2.ConfigService/WatchSmtp": lambda r, d: _expect(
        r.kind == v2.WatchSmtpEvent.KIND_SNAPSHOT and r.profile.port == d.smtp_port
        and r.profile.relay_password.has_value and PASSWORD.encode() not in r.SerializeToString()),
    "smtpconfig.v2.SecretProviderService/ListProviderTypes": lambda r, d: _expect(
        "file" in {t.name for t in r.provider_types}),
    "smtpconfig.v2.SecretProviderService/ListPlugins": lambda r, d: _expect(
        ["file"] in [list(p.provider_types) for p in r.plugins]),
    "smtpconfig.v2.SecretProviderService/ListProviders": lambda r, d: _expect(d.files in {p.id for p in r.providers}),
    "smtpconfig.v2.SecretProviderService/GetProvider": lambda r, d: _expect(r.provider.id == d.files),
    "smtpconfig.v2.SecretProviderService/CreateProvider": _created,
    "smtpconfig.v2.SecretProviderService/DeleteProvider": _deleted,
    "smtpconfig.v2.SecretProviderService/FlushCache": lambda r, d: _expect((r.values, r.failures) == (1, 0), str(r)),
    "smtpconfig.v2.SecretProviderService/CheckSecret": lambda r, d: _expect(
        r.success and r.provider == d.files and r.provider_type == "file"),
    "smtpconfig.v2.AuditService/ListAuditRecords": lambda r, d: _expect(len(r.records) > 0),
}


def _expect(condition: bool, why: str = "") -> None:
    assert condition, why


# --- the servers --------------------------------------------------------------------------------


class ServerLog(logging.Handler):
    """Every record the server's loggers (`service.*`, plugins) emit while this module runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass(frozen=True)
class Caller:
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]
    deployment: Deployment
    identity: str


@dataclass
class World:
    ca: TestCA
    token: Deployment  # plaintext TCP + tokens; its Unix socket has no identity
    mtls: Deployment
    unix: dict[tuple[str, str], Deployment]  # (grant, permission) -> server whose socket identity has it
    tokens: dict[str, str]  # identity -> token
    certs: dict[str, Any]  # name -> CertPaths
    log: ServerLog
    channels: list[grpc.Channel] = field(default_factory=list)  # every channel opened, closed at the end
    # One channel per caller of the matrix, opened by `connect`.
    token_tcp: grpc.Channel | None = None
    mtls_by_name: dict[str, grpc.Channel] = field(default_factory=dict)
    unix_by_grant: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)

    def open(self, channel: grpc.Channel) -> grpc.Channel:
        self.channels.append(channel)
        return channel

    def mtls_channel(self, cert_name: str | None) -> grpc.Channel:
        ca = self.ca.path.read_bytes()
        if cert_name is None:
            credentials = grpc.ssl_channel_credentials(ca)
        else:
            paths = self.certs[cert_name]
            credentials = grpc.ssl_channel_credentials(ca, paths.key.read_bytes(), paths.cert.read_bytes())
        # A subchannel of its own: grpc would otherwise share one between channels to one address.
        return self.open(grpc.secure_channel(
            self.mtls.server.target, credentials, options=(("grpc.use_local_subchannel_pool", 1),)))

    def caller(self, kind: str, grant: str, permission: str) -> Caller:
        """A caller of `kind` whose identity holds `permission` only ("only") or every permission
        but it ("allbut")."""
        name = f"{grant}-{slug(permission)}"
        if kind == "token":
            metadata = (("authorization", f"Bearer {self.tokens[name]}"),)
            assert self.token_tcp is not None
            return Caller(self.token_tcp, metadata, self.token, name)
        if kind == "mtls":
            return Caller(self.mtls_by_name[name], (), self.mtls, spiffe(name))
        if kind == "unix":
            deployment = self.unix[(grant, permission)]
            return Caller(self.unix_by_grant[(grant, permission)], (), deployment, f"sock-{name}")
        raise AssertionError(kind)

    def connect(self) -> None:
        self.token_tcp = self.open(grpc.insecure_channel(self.token.server.target))
        self.mtls_by_name = {n: self.mtls_channel(n) for n in self.certs if n.startswith(("only-", "allbut-"))}
        self.unix_by_grant = {key: self.open(grpc.insecure_channel(d.server.target)) for key, d in self.unix.items()}


GRANTS = {
    "only": lambda p: (p,),
    "allbut": lambda p: tuple(q for q in PERMISSIONS if q != p),
}

# Certificates for the identity-order test, and the policy entries naming some of their names.
ORDER_CERTS = {
    # name: (cn, uris, dns, the identity the server must pick)
    "order-uri": ("order-uri-cn", (spiffe("order-uri"),), ("order-uri.test",), spiffe("order-uri")),
    "order-second-uri": ("o2-cn", (spiffe("unlisted-1"), spiffe("order-second")), ("o2.test",), spiffe("order-second")),
    "order-dns": ("order-dns-cn", (spiffe("unlisted-2"),), ("unlisted.test", "order-dns.test"), "dns:order-dns.test"),
    "order-cn": ("order-cn", (spiffe("unlisted-3"),), ("unlisted-3.test",), "cn:order-cn"),
    "cn-only": ("cn-only", (), (), "cn:cn-only"),
    "dns-only": ("dns-only-cn-unlisted", (), ("dns-only.test",), "dns:dns-only.test"),
    # Nothing it names is in the policy: the identity is its first name, which may do nothing.
    "stranger": ("stranger-cn", (spiffe("stranger"),), ("stranger.test",), spiffe("stranger")),
}
ORDER_POLICY = (
    # Every name of order-uri is listed, each with another permission: the URI must win.
    (spiffe("order-uri"), ("smtp:read",)),
    ("dns:order-uri.test", ("audit:read",)),
    ("cn:order-uri-cn", ("providers:read",)),
    (spiffe("order-second"), ("smtp:read",)),
    ("dns:o2.test", ("audit:read",)),
    ("dns:order-dns.test", ("smtp:read",)),
    ("cn:order-dns-cn", ("audit:read",)),
    ("cn:order-cn", ("smtp:read",)),
    ("cn:cn-only", ("smtp:read",)),
    ("dns:dns-only.test", ("smtp:read",)),
)


def _start(data_dir: Path, smtp: SmtpServer, ca: TestCA, files: Path, **settings) -> Deployment:
    server = ServerThread(data_dir, ca_bundle=ca.path, smtp_timeout=10.0, file_directories=(files,), **settings).start()
    credentials = None
    if settings.get("tls_client_ca_file"):
        # On an mTLS listener the admin token still needs a client certificate to get through
        # the handshake; the token, not the certificate, then names the caller.
        transport = ca.issue_client("admin-transport", "admin-transport")
        credentials = grpc.ssl_channel_credentials(
            ca.path.read_bytes(), transport.key.read_bytes(), transport.cert.read_bytes())
    admin = token_channel(server.target, server.token, credentials)
    return set_up(Deployment(server, admin, files, smtp.port))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = short_dir("authz")
    log = ServerLog()
    logging.getLogger().addHandler(log)
    watched = [logging.getLogger(name) for name in ("smtpconfig", "smtpconfig_file_provider")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.setLevel(logging.DEBUG)
    ca = TestCA(root / "pki")
    files = root / "files"
    files.mkdir()
    (files / "smtp-password").write_text(FILE_SECRET + "\n")
    deployments: list[Deployment] = []
    world: World | None = None
    smtp = SmtpServer("starttls", certs=ca.issue("smtp"), credentials={"relay": PASSWORD}).start()
    try:
        tokens = {f"{grant}-{slug(p)}": new_token() for grant in GRANTS for p in PERMISSIONS}
        token = _start(
            root / "token", smtp, ca, files,
            tokens=tuple((identity, token_hash(t)) for identity, t in tokens.items()),
            policy=tuple((f"{grant}-{slug(p)}", make(p)) for grant, make in GRANTS.items() for p in PERMISSIONS),
        )
        deployments.append(token)

        certs = {}
        for grant in GRANTS:
            for p in PERMISSIONS:
                name = f"{grant}-{slug(p)}"
                certs[name] = ca.issue_client(name, f"{name}-cn", uris=(spiffe(name),))
        for name, (cn, uris, dns, _) in ORDER_CERTS.items():
            certs[name] = ca.issue_client(name, cn, uris=uris, dns=dns)
        server_cert = ca.issue("server")
        mtls = _start(
            root / "mtls", smtp, ca, files,
            tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
            unix_socket="",
            policy=tuple((spiffe(f"{grant}-{slug(p)}"), make(p)) for grant, make in GRANTS.items()
                         for p in PERMISSIONS) + ORDER_POLICY,
        )
        deployments.append(mtls)

        unix = {}
        for grant, make in GRANTS.items():
            for p in PERMISSIONS:
                identity = f"sock-{grant}-{slug(p)}"
                unix[(grant, p)] = _start(
                    root / f"unix-{grant}-{slug(p)}", smtp, ca, files, listen=(),
                    unix_socket_identity=identity, policy=((identity, make(p)),),
                )
                deployments.append(unix[(grant, p)])

        world = World(ca, token, mtls, unix, tokens, certs, log)
        world.connect()
        yield world
    finally:
        for channel in world.channels if world else ():
            channel.close()
        for deployment in deployments:
            deployment.admin.close()
            deployment.server.stop()
        smtp.stop()
        logging.getLogger().removeHandler(log)
        for logger, level in zip(watched, levels, strict=True):
            logger.setLevel(level)
        shutil.rmtree(root, ignore_errors=True)


# --- the table ----------------------------------------------------------------------------------


def test_every_rpc_has_a_case_and_the_permission_the_table_expects() -> None:
    assert set(EXPECTED_PERMISSION) == set(METHODS), "an RPC without an expected permission, or a stale entry"
    assert set(REQUESTS) == set(METHODS), "an RPC without a request to call it with"
    declared = {rpc: getattr(SERVICERS[rpc], METHODS[rpc].name).rpc_spec.permission for rpc in RPCS}
    assert declared == EXPECTED_PERMISSION
    # Every permission guards something, so a policy can grant each one meaningfully.
    assert set(EXPECTED_PERMISSION.values()) == set(PERMISSIONS)


# --- the matrix ---------------------------------------------------------------------------------

KINDS = ("token", "mtls", "unix")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_the_needed_permission_alone_is_enough(world: World, rpc: str, kind: str) -> None:
    caller = world.caller(kind, "only", EXPECTED_PERMISSION[rpc])
    outcome = invoke(caller.channel, rpc, REQUESTS[rpc](caller.deployment), caller.metadata)
    assert outcome.code == OK, f"{caller.identity}: {outcome.code.name} {outcome.details}"
    CHECKS.get(rpc, lambda r, d: None)(outcome.response, caller.deployment)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_every_other_permission_is_not_enough(world: World, rpc: str, kind: str) -> None:
    permission = EXPECTED_PERMISSION[rpc]
    caller = world.caller(kind, "allbut", permission)
    before = snapshot(caller.deployment)
    outcome = invoke(caller.channel, rpc, REQUESTS[rpc](caller.deployment), caller.metadata)
    assert outcome.code == PERMISSION_DENIED, f"{caller.identity}: {outcome.code.name} {outcome.details}"
    assert outcome.details == f"{caller.identity!r} does not have the {permission} permission"
    assert snapshot(caller.deployment) == before


NO_TOKEN = {
    "no authorization metadata": (),
    "unknown bearer token": (("authorization", "Bearer " + new_token()),),
    "Basic scheme": (("authorization", "Basic xyz"),),
    "empty bearer token": (("authorization", "Bearer "),),
}


@pytest.mark.parametrize("how", NO_TOKEN)
@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_token_listener_without_a_valid_token_is_unauthenticated(world: World, rpc: str, how: str) -> None:
    before = snapshot(world.token)
    outcome = invoke(world.caller("token", "only", "smtp:read").channel, rpc, REQUESTS[rpc](world.token), NO_TOKEN[how])
    assert outcome.code == UNAUTHENTICATED, f"{outcome.code.name} {outcome.details}"
    assert snapshot(world.token) == before


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_unix_socket_without_an_identity_setting_is_unauthenticated(world: World, rpc: str) -> None:
    # The token server's socket: no unix_socket_identity, so a socket caller must bring a token.
    before = snapshot(world.token)
    with grpc.insecure_channel(f"unix:{world.token.server.app.socket_path}") as channel:
        outcome = invoke(channel, rpc, REQUESTS[rpc](world.token))
    assert outcome.code == UNAUTHENTICATED, f"{outcome.code.name} {outcome.details}"
    assert "unix_socket_identity" in outcome.details
    assert snapshot(world.token) == before


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_certificate_the_policy_does_not_name_is_denied(world: World, rpc: str) -> None:
    before = snapshot(world.mtls)
    channel = world.mtls_channel("stranger")
    outcome = invoke(channel, rpc, REQUESTS[rpc](world.mtls))
    assert outcome.code == PERMISSION_DENIED, f"{outcome.code.name} {outcome.details}"
    assert outcome.details.startswith(repr(spiffe("stranger")))
    assert snapshot(world.mtls) == before


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
def test_mtls_without_a_client_certificate_fails_the_handshake(world: World, rpc: str) -> None:
    before = snapshot(world.mtls)
    outcome = invoke(world.mtls_channel(None), rpc, REQUESTS[rpc](world.mtls), timeout=10)
    assert outcome.code == grpc.StatusCode.UNAVAILABLE, f"{outcome.code.name} {outcome.details}"
    assert snapshot(world.mtls) == before


# --- how identities are found -------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER_CERTS)
def test_certificate_identity_is_the_first_name_the_policy_knows(world: World, name: str) -> None:
    """URI SANs (in certificate order), then DNS SANs as dns:NAME, then the CN as cn:NAME."""
    expected = ORDER_CERTS[name][3]
    channel = world.mtls_channel(name)
    # Nobody in ORDER_POLICY may modify, so the refusal names the identity the server picked.
    refused = invoke(channel, "smtpconfig.v2.ConfigService/UpdateSmtp", v2.UpdateSmtpRequest())
    assert refused.code == PERMISSION_DENIED
    assert refused.details == f"{expected!r} does not have the smtp:modify permission"
    read = invoke(channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest())
    # Each picked name may read the profile; other names on the same certificate may not, and
    # whatever they grant (audit:read, providers:read) must not leak into the picked identity.
    assert read.code == (PERMISSION_DENIED if name == "stranger" else OK), read.details
    audit = invoke(channel, "smtpconfig.v2.AuditService/ListAuditRecords", audit_pb.ListAuditRecordsRequest())
    assert audit.code == PERMISSION_DENIED
    providers = invoke(channel, "smtpconfig.v2.SecretProviderService/ListProviders", providers_pb.ListProvidersRequest())
    assert providers.code == PERMISSION_DENIED


def test_each_of_many_tokens_names_its_own_identity() -> None:
    # A token's hash is looked up, not compared with each configured one in turn: with thousands
    # configured, each still names its own identity, and a token one character off names none.
    tokens = [new_token() for _ in range(5000)]
    authenticator = Authenticator([(f"client-{i}", token_hash(t)) for i, t in enumerate(tokens)], Policy(()))
    for i in (0, 1234, 4999):
        found = authenticator.identify(None, (("authorization", f"Bearer {tokens[i]}"),))
        assert found.name == f"client-{i}"
    near = tokens[42][:-1] + ("A" if tokens[42][-1] != "A" else "B")
    with pytest.raises(Unauthenticated, match="not known"):
        authenticator.identify(None, (("authorization", f"Bearer {near}"),))


def test_a_token_names_the_caller_even_with_a_certificate(world: World) -> None:
    # A certificate for "only smtp:read" plus the token of "only audit:read": the token decides.
    channel = world.mtls_channel("only-smtp.read")
    assert invoke(channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest()).code == OK
    admin = (("authorization", f"Bearer {world.mtls.server.token}"),)
    assert invoke(channel, "smtpconfig.v2.AuditService/ListAuditRecords", audit_pb.ListAuditRecordsRequest(), admin).code == OK
    # A token the server does not know is refused, never ignored in favour of the certificate.
    unknown = (("authorization", f"Bearer {new_token()}"),)
    outcome = invoke(channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), unknown)
    assert outcome.code == UNAUTHENTICATED


def test_a_token_over_the_unix_socket_names_the_caller(world: World) -> None:
    metadata = world.caller("token", "only", "smtp:read").metadata
    with grpc.insecure_channel(f"unix:{world.token.server.app.socket_path}") as channel:
        assert invoke(channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), metadata).code == OK
        denied = invoke(channel, "smtpconfig.v2.AuditService/ListAuditRecords", audit_pb.ListAuditRecordsRequest(), metadata)
    assert denied.code == PERMISSION_DENIED and "'only-smtp.read'" in denied.details
    # On a socket with an identity, a token it does not know is refused, not traded for the
    # socket's identity.
    socket_reader = world.caller("unix", "only", "smtp:read")
    assert invoke(socket_reader.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest()).code == OK
    for metadata in NO_TOKEN.values():
        if metadata:
            outcome = invoke(socket_reader.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), metadata)
            assert outcome.code == UNAUTHENTICATED, metadata


# --- open to everyone: health and reflection ------------------------------------------------------


LISTENERS: dict[str, Callable[[World], grpc.Channel]] = {
    "token TCP": lambda w: grpc.insecure_channel(w.token.server.target),
    "Unix socket without identity": lambda w: grpc.insecure_channel(f"unix:{w.token.server.app.socket_path}"),
    "mTLS with an unnamed certificate": lambda w: w.mtls_channel("stranger"),
    "Unix socket with identity": lambda w: grpc.insecure_channel(w.unix[("only", "audit:read")].server.target),
}


@pytest.mark.parametrize("listener", LISTENERS)
def test_health_and_reflection_need_no_identity(world: World, listener: str) -> None:
    channel = LISTENERS[listener](world)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        served = health.Check(health_pb2.HealthCheckRequest(service="smtpconfig.v2.ConfigService"), timeout=10)
        assert served.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
        assert {service.full_name for service, _ in SERVICES} | {"grpc.health.v1.Health"} <= names
    finally:
        channel.close()


# --- the request id -----------------------------------------------------------------------------


def test_request_id_comes_back_on_every_refusal(world: World) -> None:
    reader = world.caller("token", "only", "smtp:read")
    seen = set()
    for metadata, code in (((), UNAUTHENTICATED), (world.caller("token", "allbut", "smtp:read").metadata, PERMISSION_DENIED)):
        outcome = invoke(reader.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), metadata)
        assert outcome.code == code
        request_id = outcome.trailers.get("x-request-id", "")
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", request_id), outcome.trailers
        seen.add(request_id)
    assert len(seen) == 2, "each call gets its own id"


def test_an_answer_carries_no_request_id_the_caller_did_not_send(world: World) -> None:
    """An id the server made for a successful call would cost the call a header that nobody asked
    for; a caller who wants to find its calls in logs and audit records names them itself."""
    reader = world.caller("token", "only", "smtp:read")
    read = invoke(reader.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), reader.metadata)
    checker = world.caller("token", "only", "providers:read")
    check = REQUESTS["smtpconfig.v2.SecretProviderService/CheckSecret"](checker.deployment)
    checked = invoke(checker.channel, "smtpconfig.v2.SecretProviderService/CheckSecret", check, checker.metadata)
    for outcome in (read, checked):  # not audited, audited
        assert outcome.code == OK, outcome.details
        assert "x-request-id" not in outcome.trailers, outcome.trailers


def test_an_audited_callers_request_id_comes_back_and_names_its_record(world: World) -> None:
    checker = world.caller("token", "only", "providers:read")
    check = REQUESTS["smtpconfig.v2.SecretProviderService/CheckSecret"](checker.deployment)
    given = f"check-{uuid.uuid4().hex[:12]}"
    outcome = invoke(checker.channel, "smtpconfig.v2.SecretProviderService/CheckSecret", check,
                     checker.metadata + (("x-request-id", given),))
    assert outcome.code == OK, outcome.details
    assert outcome.trailers.get("x-request-id") == given
    admin = (("authorization", f"Bearer {checker.deployment.server.token}"),)
    records = invoke(checker.channel, "smtpconfig.v2.AuditService/ListAuditRecords",
                     audit_pb.ListAuditRecordsRequest(), admin)
    assert records.code == OK
    assert [(r.identity, r.outcome) for r in records.response.records if r.request_id == given] == [
        (checker.identity, "OK")
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_a_callers_request_id_is_echoed(world: World, kind: str) -> None:
    for grant, code in (("only", OK), ("allbut", PERMISSION_DENIED)):
        caller = world.caller(kind, grant, "smtp:read")
        given = f"req-{kind}.{grant}:{uuid.uuid4().hex[:8]}"
        outcome = invoke(caller.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(),
                         caller.metadata + (("x-request-id", given),))
        assert outcome.code == code
        assert outcome.trailers.get("x-request-id") == given


@pytest.mark.parametrize("given", ["has space", "x" * 65, "semi;colon", ""])
def test_an_unusable_request_id_is_replaced(world: World, given: str) -> None:
    caller = world.caller("token", "only", "smtp:read")
    outcome = invoke(caller.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(),
                     caller.metadata + (("x-request-id", given),))
    assert outcome.code == OK
    request_id = outcome.trailers.get("x-request-id", "")
    assert request_id != given and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", request_id)


# --- nothing secret in the server's log ---------------------------------------------------------


def test_no_token_or_secret_reaches_the_server_log(world: World) -> None:
    # Make sure refusals of each kind were logged in this run, whatever ran before.
    invoke(world.caller("token", "only", "smtp:read").channel, "smtpconfig.v2.ConfigService/GetSmtp",
           v2.GetSmtpRequest(), NO_TOKEN["unknown bearer token"])
    caller = world.caller("token", "allbut", "smtp:read")
    invoke(caller.channel, "smtpconfig.v2.ConfigService/GetSmtp", v2.GetSmtpRequest(), caller.metadata)
    text = "\n".join(world.log.lines)
    assert "refused: UNAUTHENTICATED" in text and "refused: PERMISSION_DENIED" in text
    planted = [*world.tokens.values(), world.token.server.token, world.mtls.server.token, PASSWORD, FILE_SECRET]
    planted += [d.server.token for d in world.unix.values()]
    planted.append(NO_TOKEN["unknown bearer token"][0][1].removeprefix("Bearer "))
    leaked = [value[:8] + "..." for value in planted if value in text]
    assert not leaked, leaked


def test_a_uri_san_cannot_borrow_a_plain_dns_or_cn_identity(world: World) -> None:
    # A URI SAN is used verbatim, so one that is not scheme://... could equal a token's identity
    # ("admin"), a DNS identity ("dns:...") or a CN identity ("cn:...").
    for n, uri in enumerate(("admin", "only-audit.read", "dns:order-dns.test", "cn:order-cn")):
        name = f"borrow-{n}"
        world.certs[name] = world.ca.issue_client(name, "borrower", uris=(uri,))
        outcome = invoke(world.mtls_channel(name), "smtpconfig.v2.AuditService/ListAuditRecords",
                         audit_pb.ListAuditRecordsRequest())
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, uri
        assert outcome.details.startswith("'cn:borrower'"), outcome.details
