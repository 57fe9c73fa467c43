"""Building and running the gRPC server.

`App` wires the store, the key, the domain and the servicers; `serve` runs an `App` until SIGTERM or
SIGINT and then drains. Tests use `App` directly on port 0.

Server model: grpc.aio on one event loop, chosen by measurement (`make bench`). On quick unary
calls a threaded grpcio server answers 1.1-1.4x more calls per second on 2 cores, but each call
that waits on the network holds one of its threads: with 32 such calls in flight (as TestSmtp,
provider and token fetches will be), its quick calls fell from ~5,000 to ~25 per second while the
aio server kept ~4,400. Waiting is what this service's apply-time calls mostly do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import signal
import socket
import ssl
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import handlers
from service.apply import Applier
from service.audit import AuditLog
from service.audit_servicer import AuditServiceV2
from service.auth import ADMIN, Authenticator, Policy, ensure_admin_token, token_hash
from service.calls import Guard
from service.catalog import ProviderCatalog
from service.limits import RateLimiter
from service.metrics import Metrics
from service.tls import ReloadingCertificates
from service.crypto import Sealer, load_key
from service.errors import FailedPrecondition
from service.plugin_manager import load_plugins
from service.profiles import ProfileService
from service.provider_service import ProviderService, declared_instances
from service.provider_servicer import SecretProviderServiceV2
from service.oauth import TokenClient
from service.resolver import Resolver
from service.servicers import ConfigServiceV1, ConfigServiceV2
from service.settings import ALL_PERMISSIONS, Settings, split_address
from service.store.sqlite import SqliteStore
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    v1.DESCRIPTOR.services_by_name["ConfigService"].full_name,
    v2.DESCRIPTOR.services_by_name["ConfigService"].full_name,
    providers_pb.DESCRIPTOR.services_by_name["SecretProviderService"].full_name,
    audit_pb.DESCRIPTOR.services_by_name["AuditService"].full_name,
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# One server per port: without this a second server could silently share a port with the first.
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


class App:
    """One running smtpconfig server."""

    def __init__(self, settings: Settings, catalog: ProviderCatalog | None = None) -> None:
        self.settings = settings
        # A catalog for profile validation in place of the provider instances (tests, tools).
        self._catalog = catalog
        self.ports: dict[str, int] = {}
        self.socket_path: Path | None = None
        self._server: grpc.aio.Server | None = None
        self._store: SqliteStore | None = None
        self._profiles: ProfileService | None = None
        self._provider_service: ProviderService | None = None
        self._resolver: Resolver | None = None
        self._applier: Applier | None = None
        self._health = health.aio.HealthServicer()
        self._health_server: grpc.aio.Server | None = None
        self._readiness: asyncio.Task | None = None
        self._audit: AuditLog | None = None
        self._ready: bool | None = None
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self.certificates: ReloadingCertificates | None = None
        self.admin_token_path: Path | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = load_key(
            env_value=os.environ.get("SMTPCONFIG_KEY"),
            key_file=settings.key_path,
            create=settings.key_is_generated,
        )
        sealer = Sealer(key)
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            self.certificates = ReloadingCertificates(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        guard_tokens, policy = self._callers()
        plugins = load_plugins(
            allow=settings.plugins_allow, block=settings.plugins_block, strict=settings.plugins_strict
        )
        declared = declared_instances(settings.providers, plugins, dict(os.environ))
        self._store = await SqliteStore.open(settings.data_dir)
        write_lock = asyncio.Lock()
        self._provider_service = ProviderService(self._store, sealer, plugins, declared, write_lock)
        await self._provider_service.start()
        catalog = self._catalog or self._provider_service
        self._profiles = ProfileService(self._store, sealer, catalog, write_lock)
        await self._profiles.start()
        self._provider_service.use_references(self._profiles.referenced_providers)
        self._resolver = Resolver(
            self._provider_service, plugins,
            timeout=settings.provider_timeout, failure_ttl=settings.provider_failure_ttl,
            fingerprint=sealer.fingerprint, metrics=self.metrics,
        )
        audit = self._audit = AuditLog(self._store, on_record=self.metrics.audit_record)
        guard = Guard(
            authenticator=Authenticator(guard_tokens, policy, settings.unix_socket_identity),
            policy=policy,
            audit=audit,
            metrics=self.metrics,
            limiters={
                "resolve": RateLimiter(settings.resolve_rate, settings.resolve_burst),
                "test": RateLimiter(settings.test_rate, settings.test_burst),
            },
            default_deadline=settings.default_deadline,
            max_concurrent=settings.max_concurrent_rpcs,
            max_concurrent_per_identity=settings.max_concurrent_rpcs_per_identity,
        )

        # No maximum_concurrent_rpcs for grpcio: it counts calls before any code of ours runs,
        # health Watch and reflection streams included, which anyone may hold open for ever; so
        # a caller without an identity could fill it. The guard counts our calls instead.
        server = grpc.aio.server(
            options=SERVER_OPTIONS + (("grpc.max_receive_message_length", settings.max_message_bytes),),
        )
        # One trust decision for every apply-time TLS peer: SMTP relays and token endpoints.
        tls = ssl.create_default_context(cafile=str(settings.ca_bundle) if settings.ca_bundle else None)
        self._applier = Applier(
            self._resolver,
            TokenClient(timeout=settings.smtp_timeout, context=tls, metrics=self.metrics),
            smtp_timeout=settings.smtp_timeout,
            context=tls,
            allow_plaintext_auth=settings.allow_plaintext_auth,
            implicit_tls_ports=settings.implicit_tls_ports,
        )
        for servicer, service in (
            (ConfigServiceV1(self._profiles, self._applier, guard), v1.DESCRIPTOR.services_by_name["ConfigService"]),
            (ConfigServiceV2(self._profiles, self._applier, guard), v2.DESCRIPTOR.services_by_name["ConfigService"]),
            (SecretProviderServiceV2(self._provider_service, self._profiles, self._resolver, guard),
             providers_pb.DESCRIPTOR.services_by_name["SecretProviderService"]),
            (AuditServiceV2(audit, guard), audit_pb.DESCRIPTOR.services_by_name["AuditService"]),
        ):
            handlers.register(server, servicer, service)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        for name in ("",) + SERVICE_NAMES:
            await self._health.set(name, _NOT_SERVING)
        credentials = self.certificates.credentials() if self.certificates else None
        for address in settings.listen:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
            if port == 0:
                raise FailedPrecondition(f"could not listen on {address}")
            self.ports[address] = port
        if settings.socket_path is not None:
            path = settings.socket_path.absolute()
            _clear_stale_socket(path)
            server.add_insecure_port(f"unix:{path}")
            self.socket_path = path  # ours from here on: removed again on stop
        self._server = server
        await server.start()
        if self.socket_path is not None:
            _restrict_socket(self.socket_path, settings.unix_socket_mode, settings.unix_socket_group, settings.data_dir)
        if settings.health_listen:
            # Probes (kubelet's gRPC probe) dial without TLS or identity: this listener serves
            # health and nothing else, so it can be open where the API is not.
            self._health_server = grpc.aio.server(options=SERVER_OPTIONS)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(settings.health_listen)
            if self.health_port == 0:
                raise FailedPrecondition(f"could not listen on {settings.health_listen}")
            await self._health_server.start()
        if settings.metrics_listen:
            host, port = split_address(settings.metrics_listen)
            try:
                self.metrics_port = self.metrics.serve(host, port)
            except OSError as error:
                raise FailedPrecondition(f"could not serve metrics on {settings.metrics_listen}: {error.strerror}") from None
        await self._check_readiness()
        self._readiness = asyncio.create_task(self._follow_readiness(), name="readiness")
        where = [f"{a.rsplit(':', 1)[0]}:{p}" for a, p in self.ports.items()]
        if self.socket_path is not None:
            where.append(f"unix:{self.socket_path}")
        log.info(
            "smtpconfig serving on %s (%s; data in %s)", ", ".join(where),
            "mTLS" if self.certificates and self.certificates.mutual else "TLS" if self.certificates else "no TLS",
            settings.data_dir,
        )
        if self.admin_token_path is not None:
            log.info("admin token in %s (the CLI reads it from there)", self.admin_token_path)

    def _callers(self) -> tuple[list[tuple[str, str]], Policy]:
        """Configured tokens and policy, plus the embedded default's admin token."""
        settings = self.settings
        tokens = list(settings.tokens)
        entries = list(settings.policy)
        if settings.admin_token:
            token = ensure_admin_token(settings.data_dir)
            self.admin_token_path = settings.data_dir / "admin.token"
            tokens.append((ADMIN, token_hash(token)))
            if ADMIN not in {identity for identity, _ in entries}:
                entries.append((ADMIN, (ALL_PERMISSIONS,)))
        return tokens, Policy(entries)

    async def _check_readiness(self) -> bool:
        assert self._store is not None
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the ping
            # completes, and stop() would then wait for this loop forever.
            async with asyncio.timeout(max(1.0, self.settings.readiness_interval)):
                await self._store.ping()
            ready = True
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            log.warning("the store is not reachable (%s); health says NOT_SERVING", type(error).__name__)
            ready = False
        if ready != self._ready:  # health watchers hear of changes only, not of every check
            self._ready = ready
            for name in ("",) + SERVICE_NAMES:
                await self._health.set(name, _SERVING if ready else _NOT_SERVING)
        return ready

    async def _follow_readiness(self) -> None:
        """Check the store every readiness interval; prune the audit trail once an hour."""
        pruned_at = float("-inf")
        while True:
            await asyncio.sleep(self.settings.readiness_interval)
            ready = await self._check_readiness()
            loop_time = asyncio.get_running_loop().time()
            if ready and self.settings.audit_retention_days and loop_time - pruned_at >= 3600:
                pruned_at = loop_time
                try:
                    count = await self._audit.prune(self.settings.audit_retention_days)
                except Exception as error:  # noqa: BLE001 - tried again in an hour
                    log.warning("pruning the audit trail failed (%s)", type(error).__name__)
                else:
                    if count:
                        log.info("pruned %s audit records older than %g days", count, self.settings.audit_retention_days)

    @property
    def target(self) -> str:
        """An address a client on this machine can dial."""
        if self.ports:
            address, port = next(iter(self.ports.items()))
            return f"{address.rsplit(':', 1)[0]}:{port}"
        return f"unix:{self.socket_path}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish for `grace` seconds, then release all."""
        grace = self.settings.grace_period if grace is None else grace
        if self._readiness is not None:
            self._readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
        self.metrics.stop()
        if self._profiles is not None:
            await self._profiles.stop()
        if self._provider_service is not None:
            await self._provider_service.stop()
        if self._resolver is not None:
            await self._resolver.close()
        if self._applier is not None:
            self._applier.close()
        if self._store is not None:
            await self._store.close()
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


def _restrict_socket(path: Path, mode: int, group: str, data_dir: Path) -> None:
    """The socket's owner, group and mode decide who may connect: they are its access boundary."""
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise FailedPrecondition(f"unix_socket_group {group!r} is not a group on this machine") from None
        try:
            os.chown(path, -1, gid)
            if path.parent.resolve() == data_dir.resolve():
                # The group must get through the data directory (0700) to reach the socket: let
                # it pass (x) without listing or reading anything; every file in it is 0600.
                os.chown(data_dir, -1, gid)
                os.chmod(data_dir, 0o710)
        except OSError as error:
            raise FailedPrecondition(
                f"cannot give the socket {path} to group {group!r}: {error.strerror}"
                " (the server's user must be a member of that group)"
            ) from None
    os.chmod(path, mode)


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a crashed server; refuse one that still answers."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise
        path.unlink(missing_ok=True)
    else:
        raise FailedPrecondition(f"{path} is in use by a running server")
    finally:
        probe.close()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls for the grace period."""
    app = App(settings)
    try:
        await app.start()
    except BaseException:
        await app.stop(0)
        raise
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: draining in-flight calls for up to %ss", settings.grace_period)
    await app.stop()
    log.info("stopped")

