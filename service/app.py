"""Building and running the gRPC server.

`App` wires the store, the key, the domain and the servicers; `serve` runs an `App` until SIGTERM or
SIGINT and then drains. Tests use `App` directly on port 0. With `workers` > 1 each worker process
of the supervisor (smtpconfig.cli.supervisor) runs one `App` in the role it was given
(`WorkerRole`): its TCP listeners share their ports with the other workers (SO_REUSEPORT), and so
does its SQLite store.

Server model: grpc.aio on one event loop, chosen by measurement (`make bench`). On quick unary
calls a threaded grpcio server answers 1.1-1.4x more calls per second on 2 cores, but each call
that waits on the network holds one of its threads: with 32 such calls in flight (as TestSmtp,
provider and token fetches will be), its quick calls fell from ~5,000 to ~25 per second while the
aio server kept ~4,400. Waiting is what this service's apply-time calls mostly do.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from smtpconfig.api import handlers
from smtpconfig.api.audit_servicer import AuditServiceV2
from smtpconfig.api.auth import ADMIN, Authenticator, Policy, ensure_admin_token, token_hash
from smtpconfig.api.calls import Guard
from smtpconfig.api.limits import RateLimiter
from smtpconfig.api.provider_servicer import SecretProviderServiceV2
from smtpconfig.api.servicers import ConfigServiceV1, ConfigServiceV2
from smtpconfig.api.tls import ReloadingCertificates
from smtpconfig.core.aio import stop_task
from smtpconfig.core.errors import FailedPrecondition, Unavailable
from smtpconfig.core.permissions import ALL_PERMISSIONS
from smtpconfig.core.workers import WorkerRole, follow_supervisor, listen_refused, port_taken, report_ready
from smtpconfig.domain.crypto import Sealer, load_key
from smtpconfig.domain.host_access import HostAccess
from smtpconfig.domain.profiles import ProfileService
from smtpconfig.domain.provider_service import ProviderService, declared_instances
from smtpconfig.domain.resolver import Resolver
from smtpconfig.domain.watch import ProfileWatch
from smtpconfig.edge.servicers import EdgeConfigServiceV1, EdgeConfigServiceV2, EdgeProviderServiceV2
from smtpconfig.edge.upstream import Followed, Upstream
from smtpconfig.ops.audit import AuditLog
from smtpconfig.ops.audit_file import AuditFile
from smtpconfig.ops.metrics import Metrics
from smtpconfig.outbound.apply import Applier
from smtpconfig.outbound.oauth import TokenClient
from smtpconfig.plugin.manager import Plugins, load_plugins
from smtpconfig.settings import DATABASE_NAME, Settings, split_address
from smtpconfig.store import lock as store_lock
from smtpconfig.store.base import Store
from smtpconfig.store.sqlite import SqliteStore
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
# Health name that follows the store alone: NOT_SERVING while writes cannot be made. With etcd the
# other names stay SERVING meanwhile (reads and resolutions are answered from memory), so an etcd
# outage does not take every replica out of its load balancer at once; operators alert on this one.
STORE_HEALTH_NAME = "smtpconfig.store"
# NOT_SERVING while this replica's audit log cannot be written: calls that need a record (tests,
# resolutions) are refused meanwhile, reads are still answered.
AUDIT_HEALTH = "smtpconfig.audit"
AUDIT_DIR = "audit"
EDGE_RESYNCED = "this edge resynced from its upstream; reconnect with AfterRevision"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_SUN_PATH_MAX = 107  # bytes of a socket path: sun_path holds 108 with the terminating NUL

# One server per port: without this a second server could silently share a port with the first.
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)
# A worker's listeners: its supervisor holds each port (checked free of other programs first) and
# every worker listens on it, the kernel spreading connections over them.
WORKER_SERVER_OPTIONS = (("grpc.so_reuseport", 1),)


class App:
    """One running smtpconfig server."""

    def __init__(self, settings: Settings, worker: WorkerRole | None = None) -> None:
        self.settings = settings
        # Set when this App is one worker of a supervisor (`workers` > 1).
        self.worker = worker
        self._server_options = WORKER_SERVER_OPTIONS if worker is not None else SERVER_OPTIONS
        self.ports: dict[str, int] = {}
        self.socket_path: Path | None = None
        self._staged_socket: Path | None = None
        self._server: grpc.aio.Server | None = None
        self._store: Store | None = None
        self._profiles: ProfileService | None = None
        self._watch: ProfileWatch | None = None
        self._provider_service: ProviderService | None = None
        self._resolver: Resolver | None = None
        self._plugins: Plugins | None = None
        self._applier: Applier | None = None
        # Edge mode (`upstream` set): the followed profile and the upstream, instead of a store.
        self._followed: Followed | None = None
        self._upstream: Upstream | None = None
        self._health = health.aio.HealthServicer()
        self._health_server: grpc.aio.Server | None = None
        self._readiness: asyncio.Task | None = None
        self._audit: AuditLog | None = None
        self._ready: bool | None = None
        self._store_ready: bool | None = None
        self._audit_shown: bool | None = None
        self._health_tasks: set[asyncio.Task] = set()
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self.certificates: ReloadingCertificates | None = None
        self.admin_token_path: Path | None = None
        # The directory this start made for the data directory, removed again if the start fails
        # before any caller could reach the server; and whether one could.
        self._created_data_dir: Path | None = None
        self._accepting = False
        self._guard: Guard | None = None
        # Every method served, ours and grpcio's, as the one generic handler the server is given
        # (`smtpconfig.api.handlers.MethodTable`); set by `start`. `python -m bench.tightloop`
        # calls our methods through it directly, without grpcio, to time our own Python, and
        # `python -m bench.stages` serves a method through parts of its handling.
        self.routes: handlers.Routes | None = None

    async def start(self) -> None:
        settings = self.settings
        _check_socket_place(settings)  # before anything is created, so a refusal leaves nothing
        self._created_data_dir = store_lock.make_data_dir(settings.data_dir)
        sealer = self._open_key()
        guard_tokens, policy = self._callers()
        if sealer is None:
            await self._open_edge()
        else:
            await self._open_domain(sealer)
        await self._open_audit()
        guard = self._guard = self._make_guard(guard_tokens, policy)
        server = await self._build_server(guard)
        await self._listen(server)
        await self._start_side_listeners()
        await self._check_readiness()
        self._readiness = asyncio.create_task(self._follow_readiness(), name="readiness")
        self._log_started()

    def _open_key(self) -> Sealer | None:
        """The data key (loaded or made) as a sealer, and the TLS certificates if configured. An
        edge keeps nothing sealed: it has no key (None)."""
        settings = self.settings
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            self.certificates = ReloadingCertificates(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        if settings.upstream:
            return None
        key = load_key(
            env_value=os.environ.get("SMTPCONFIG_KEY"),
            key_file=settings.key_path,
            create=settings.key_is_generated,
            sealed_data=settings.data_dir / DATABASE_NAME if settings.store == "sqlite" else None,
        )
        return Sealer(key)

    async def _open_edge(self) -> None:
        """An edge: the profile followed from the upstream, in memory; no store, no providers."""
        settings = self.settings
        self._followed = Followed(keep=settings.history_keep)
        self._upstream = Upstream(settings, self._followed)
        self._watch = watch = ProfileWatch(self._followed, settings.watch_progress_seconds)
        # The edge lost track of its upstream: its clients resume, and resync in turn.
        self._followed.on_resync(lambda: watch.end_open(EDGE_RESYNCED))
        self._upstream.start()
        self._watch.start()

    async def _open_domain(self, sealer: Sealer) -> None:
        """Plugins, declared provider instances, the store and the domain services over them."""
        settings = self.settings
        self._plugins = plugins = load_plugins(
            allow=settings.plugins_allow, block=settings.plugins_block, strict=settings.plugins_strict
        )
        access = HostAccess.from_settings(settings)
        declared = declared_instances(settings.providers, plugins, dict(os.environ), access)
        shared_lock = self.worker.lock_fd if self.worker is not None and self.worker.lock_fd >= 0 else None
        self._store = await open_store(settings, lock_fd=shared_lock)
        await self._store.claim_key(sealer.key_id)
        write_lock = asyncio.Lock()
        self._provider_service = ProviderService(self._store, sealer, plugins, declared, write_lock, access)
        await self._provider_service.start()
        self._profiles = ProfileService(self._store, sealer, self._provider_service, write_lock)
        await self._profiles.start()
        self._provider_service.use_references(self._profiles.referenced_providers)
        self._watch = ProfileWatch(self._profiles, settings.watch_progress_seconds)
        self._watch.start()
        self._resolver = Resolver(
            self._provider_service, plugins,
            timeout=settings.provider_timeout, failure_ttl=settings.provider_failure_ttl,
            fingerprint=sealer.fingerprint, metrics=self.metrics,
        )

    async def _open_audit(self) -> None:
        """The audit trail: change records in the store, the rest in this replica's own log."""
        settings = self.settings

        def show() -> None:
            task = loop.create_task(self._show_audit_health())
            self._health_tasks.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._health_tasks.discard)

        def on_health(ok: bool) -> None:
            # Called on the log's writer thread, or the loop's: hand the change to the loop.
            loop.call_soon_threadsafe(show)

        loop = asyncio.get_running_loop()
        log_file = await AuditFile.open(
            settings.data_dir / AUDIT_DIR, settings.replica, max_bytes=settings.audit_max_bytes,
            keep_files=settings.audit_keep_files, fsync=settings.audit_fsync,
            stdout=sys.stdout if settings.audit_stdout else None, on_health=on_health,
        )
        self._audit = AuditLog(self._store, log_file, on_record=self.metrics.audit_record)

    async def _show_audit_health(self) -> None:
        """Health of AUDIT_HEALTH as the log stands now; watchers hear of changes only."""
        ok = self._audit is not None and self._audit.log.healthy
        if ok != self._audit_shown:
            self._audit_shown = ok
            await self._health.set(AUDIT_HEALTH, _SERVING if ok else _NOT_SERVING)

    def _make_guard(self, guard_tokens: list[tuple[str, str]], policy: Policy) -> Guard:
        """The guard every call of ours passes: identity, permission, limits, audit."""
        settings = self.settings
        audit = self._audit
        assert audit is not None
        return Guard(
            authenticator=Authenticator(guard_tokens, policy, settings.unix_socket_identity),
            policy=policy,
            audit=audit,
            metrics=self.metrics,
            limiters={
                "resolve": RateLimiter(settings.resolve_rate, settings.resolve_burst),
                "test": RateLimiter(settings.test_rate, settings.test_burst),
                "refresh": RateLimiter(1.0 / settings.refresh_interval_seconds, 1),
                "refusals": RateLimiter(settings.audit_refusals_rate, settings.audit_refusals_burst),
            },
            default_deadline=settings.default_deadline,
            max_concurrent=settings.max_concurrent_rpcs,
            max_concurrent_per_identity=settings.max_concurrent_rpcs_per_identity,
            max_streams_per_identity=settings.max_watch_streams_per_identity,
            edge_identities=settings.edge_identities,
        )

    async def _build_server(self, guard: Guard) -> grpc.aio.Server:
        """The gRPC server with the servicers, health (not serving yet) and reflection; no ports."""
        settings = self.settings
        # No maximum_concurrent_rpcs for grpcio: it counts calls before any code of ours runs,
        # health Watch and reflection streams included, which anyone may hold open for ever; so
        # a caller without an identity could fill it. The guard counts our calls instead.
        server = grpc.aio.server(
            options=self._server_options + (("grpc.max_receive_message_length", settings.max_message_bytes),),
        )
        table = handlers.MethodTable()
        for servicer, service in self._servicers(guard):
            handlers.register(table, servicer, service)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, table)
        reflection.enable_server_reflection(
            SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            table,
        )
        self.routes = table.handler()
        server.add_generic_rpc_handlers((self.routes,))
        for name in ("", STORE_HEALTH_NAME, AUDIT_HEALTH) + SERVICE_NAMES:
            await self._health.set(name, _NOT_SERVING)
        return server

    def _servicers(self, guard: Guard) -> list[tuple[object, ServiceDescriptor]]:
        """Each servicer with the service it serves: an edge's, or a server's over its store."""
        settings = self.settings
        assert self._audit is not None
        config_v1 = v1.DESCRIPTOR.services_by_name["ConfigService"]
        config_v2 = v2.DESCRIPTOR.services_by_name["ConfigService"]
        providers = providers_pb.DESCRIPTOR.services_by_name["SecretProviderService"]
        audit = (AuditServiceV2(self._audit, guard), audit_pb.DESCRIPTOR.services_by_name["AuditService"])
        if self._upstream is not None:
            assert self._followed is not None and self._watch is not None
            return [
                (EdgeConfigServiceV1(self._upstream, guard, settings.default_deadline), config_v1),
                (EdgeConfigServiceV2(self._followed, self._upstream, guard, self._watch,
                                     settings.watch_max_age_seconds, settings.default_deadline), config_v2),
                (EdgeProviderServiceV2(self._upstream, guard), providers),
                audit,
            ]
        assert self._resolver is not None and self._profiles is not None
        assert self._provider_service is not None and self._plugins is not None
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
        return [
            (ConfigServiceV1(self._profiles, self._applier, guard), config_v1),
            (ConfigServiceV2(self._profiles, self._applier, guard, self._watch, settings.watch_max_age_seconds),
             config_v2),
            (SecretProviderServiceV2(self._provider_service, self._plugins, self._profiles, self._resolver, guard),
             providers),
            audit,
        ]

    async def _listen(self, server: grpc.aio.Server) -> None:
        """Bind the API's ports and Unix socket, start serving, then publish the socket."""
        settings = self.settings
        credentials = self.certificates.credentials() if self.certificates else None
        for address in settings.listen:
            port = _bind(server, address, credentials, shared=self.worker is not None)
            self.ports[address] = port
        path = settings.socket_path.absolute() if settings.socket_path is not None else None
        if path is not None:
            _clear_stale_socket(path)
            self._staged_socket = _staging_path(path)  # ours from here on: removed again on stop
            server.add_insecure_port(f"unix:{self._staged_socket}")
        self._server = server
        self._accepting = True  # from here on a caller may write: a failed start undoes nothing
        await server.start()
        if self._staged_socket is not None and path is not None:
            _restrict_socket(
                self._staged_socket, settings.unix_socket_mode, settings.unix_socket_group, settings.data_dir, path
            )
            self.socket_path = _publish_socket(self._staged_socket, path)
            self._staged_socket = None

    async def _start_side_listeners(self) -> None:
        """The plaintext health listener for probes and the metrics endpoint, if configured."""
        settings = self.settings
        if settings.health_listen:
            # Probes (kubelet's gRPC probe) dial without TLS or identity: this listener serves
            # health and nothing else, so it can be open where the API is not.
            self._health_server = grpc.aio.server(options=self._server_options)
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

    def _log_started(self) -> None:
        settings = self.settings
        where = [f"{a.rsplit(':', 1)[0]}:{p}" for a, p in self.ports.items()]
        if self.socket_path is not None:
            where.append(f"unix:{self.socket_path}")
        loop = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
        log.info(
            "smtpconfig serving on %s (%s; %s event loop; data in %s)", ", ".join(where),
            "mTLS" if self.certificates and self.certificates.mutual else "TLS" if self.certificates else "no TLS",
            loop, settings.data_dir,
        )
        if self.health_port is not None:
            host = split_address(settings.health_listen)[0]
            log.info("health checks (grpc.health.v1 only, no TLS) on %s", _host_port(host, self.health_port))
        if self.metrics_port is not None:
            host = split_address(settings.metrics_listen)[0]
            log.info("metrics on http://%s/metrics", _host_port(host, self.metrics_port))
        if self.admin_token_path is not None:
            log.info(
                "admin token in %s (the CLI sends it on its own only over the data directory's socket;"
                " elsewhere give --token-file)", self.admin_token_path,
            )

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
        if self._store is None:
            return await self._check_edge_readiness()
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the ping
            # completes, and stop() would then wait for this loop forever.
            async with asyncio.timeout(max(1.0, self.settings.readiness_interval)):
                await self._store.ping()
            ready = True
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            # The store's own errors name the cause (a full disk, a lock) and never a value.
            why = str(error) if isinstance(error, Unavailable) else type(error).__name__
            log.warning("the store is not reachable (%s); health says NOT_SERVING", why)
            ready = False
        if ready != self._store_ready:  # health watchers hear of changes only, not of every check
            self._store_ready = ready
            await self._health.set(STORE_HEALTH_NAME, _SERVING if ready else _NOT_SERVING)
            self._store_changed(ready)
        # SQLite: one replica, whose disk is the store; it says NOT_SERVING with its store. etcd:
        # every replica holds the last known state and keeps answering reads and resolutions, so
        # once it has started the others stay SERVING while only writes fail.
        serving = ready or (self.settings.store == "etcd" and self._ready is not None)
        if serving != self._ready:
            self._ready = serving
            for name in ("",) + SERVICE_NAMES:
                await self._health.set(name, _SERVING if serving else _NOT_SERVING)
        if self._audit is not None:
            await self._audit.log.probe()  # while the log cannot be written: try again
            await self._show_audit_health()
        return ready

    async def _check_edge_readiness(self) -> bool:
        """An edge serves once it has followed the upstream, and goes on serving the last
        followed profile through an outage; its "store" health says whether it follows now."""
        followed = self._followed
        assert followed is not None
        connected = followed.connected
        if connected != self._store_ready:
            self._store_ready = connected
            await self._health.set(STORE_HEALTH_NAME, _SERVING if connected else _NOT_SERVING)
        serving = connected or followed.current is not None
        if serving != self._ready:
            self._ready = serving
            for name in ("",) + SERVICE_NAMES:
                await self._health.set(name, _SERVING if serving else _NOT_SERVING)
        if self._audit is not None:
            await self._audit.log.probe()
            await self._show_audit_health()
        return connected

    def _store_changed(self, ready: bool) -> None:
        """With etcd a replica's profile is only as fresh as its watch: while the store cannot be
        reached, WatchSmtp streams end UNAVAILABLE so that clients move to a replica that can
        (and streams opened meanwhile end at once); they are served again once it is back. A
        SQLite replica is the only writer, so what it holds stays current: its streams go on."""
        if self._watch is None or self.settings.store != "etcd":
            return
        if ready:
            self._watch.reopen()
        else:
            self._watch.end_all("this replica cannot reach its store (etcd); reconnect to another replica")

    async def _follow_readiness(self) -> None:
        """Check the store every readiness interval; prune the audit trail once an hour."""
        pruned_at = float("-inf")
        while True:
            await asyncio.sleep(self.settings.readiness_interval)
            ready = await self._check_readiness()
            loop_time = asyncio.get_running_loop().time()
            audit = self._audit  # set by `start`, before this task begins
            if audit is not None and ready and self.settings.audit_retention_days and loop_time - pruned_at >= 3600:
                pruned_at = loop_time
                try:
                    count = await audit.prune(self.settings.audit_retention_days)
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
        await stop_task(self._readiness)
        await self._health.enter_graceful_shutdown()
        if self._watch is not None:
            # Streams would hold the grace period for nothing: end them first, so that their
            # clients move to another replica at once.
            await self._watch.stop("the server is shutting down; reconnect with AfterRevision")
        if self._server is not None:
            await self._server.stop(grace)
        if self._guard is not None:
            await self._guard.close()
        if self._health_server is not None:
            await self._health_server.stop(0)
        self.metrics.stop()
        if self._upstream is not None:
            await self._upstream.stop()
        if self._profiles is not None:
            await self._profiles.stop()
        if self._provider_service is not None:
            await self._provider_service.stop()
        if self._resolver is not None:
            await self._resolver.close()
        if self._applier is not None:
            self._applier.close()
        if self._audit is not None:
            await self._audit.close()
        if self._store is not None:
            await self._store.close()
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
        if self._staged_socket is not None:  # start failed before the socket was published
            self._staged_socket.unlink(missing_ok=True)
            self._staged_socket.parent.rmdir()
        if not self._accepting and self._created_data_dir is not None:
            store_lock.remove_unused(self._created_data_dir, self.settings.data_dir)

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


def _check_socket_place(settings: Settings) -> None:
    """Refuse a socket whose directory is missing outside the data directory (creating it would
    make a system directory, /run/smtpconfig say, with the server's owner and umask), or whose
    group does not exist."""
    path = settings.socket_path
    if path is None:
        return
    parent = Path(os.path.abspath(path)).parent
    if not parent.is_dir() and not parent.is_relative_to(os.path.abspath(settings.data_dir)):
        raise FailedPrecondition(
            f"the directory of unix_socket {path} does not exist: create {parent} (writable by the"
            " server's user only), or set unix_socket to a path in an existing directory"
        )
    if settings.unix_socket_group:
        _socket_gid(settings.unix_socket_group)


def _socket_gid(group: str) -> int:
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except (KeyError, OverflowError):
        raise FailedPrecondition(f"unix_socket_group {group!r} is not a group on this machine") from None


def _host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets, as a listen setting is written."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _staging_path(path: Path) -> Path:
    """Where the socket is bound first: a new directory beside `path`, mode 0700 whatever the
    umask. A socket is created with the mode the umask leaves (0777 under umask 000) and can only be
    chmod-ed once it exists; in there no one else can reach it until its mode and group are set."""
    staged = Path(tempfile.mkdtemp(prefix=".", dir=path.parent)) / "s"
    if len(os.fsencode(staged)) > _SUN_PATH_MAX:
        staged.parent.rmdir()
        raise FailedPrecondition(
            f"unix socket path {path} leaves no room to create the socket beside it; set a shorter unix_socket"
        )
    return staged


def _publish_socket(staged: Path, path: Path) -> Path:
    """Move the finished socket to its place (a rename keeps it bound and listening)."""
    os.rename(staged, path)
    staged.parent.rmdir()
    return path


def _restrict_socket(path: Path, mode: int, group: str, data_dir: Path, final: Path) -> None:
    """The socket's owner, group and mode decide who may connect: they are its access boundary.
    `path` is where it is bound now, `final` where it will be served."""
    if group:
        gid = _socket_gid(group)
        try:
            os.chown(path, -1, gid)
            if final.parent.resolve() == data_dir.resolve():
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
        # Only inside the data directory: _check_socket_place refused a missing one elsewhere.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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


def _bind(server: grpc.aio.Server, address: str, credentials, *, shared: bool = False) -> int:
    """Listen on `address`, or say which address failed and how to pick another: grpcio's own
    RuntimeError sends the reader to debug logging instead. `shared`: a worker's port, which its
    supervisor and the other workers hold too."""
    # Asked before grpcio binds: its own failure also writes a core error line of its own to
    # stderr, which our one line makes redundant.
    if port_taken(*split_address(address), shared=shared):
        port = 0
    else:
        try:
            port = _add_port(server, address, credentials)
        except RuntimeError:
            port = 0
    if port == 0:
        raise FailedPrecondition(listen_refused(address))
    return port


def _add_port(server: grpc.aio.Server, address: str, credentials) -> int:
    if credentials is not None:
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)


async def open_store(settings: Settings, *, lock_fd: int | None = None) -> Store:
    """The configured store: the SQLite file in the data directory, or the etcd cluster. `lock_fd`:
    a worker's SQLite store, shared with the other workers under their supervisor's lock."""
    if settings.store == "etcd":
        # Imported here: only cluster mode needs the etcd client (the `etcd` extra).
        try:
            from smtpconfig.store.etcd import EtcdOptions, EtcdStore
        except ImportError as error:
            raise FailedPrecondition(
                f"store = etcd needs the etcd client: install smtpconfig[etcd] ({error})"
            ) from None
        return await EtcdStore.open(EtcdOptions(
            endpoints=settings.etcd_endpoints, prefix=settings.etcd_prefix,
            ca_file=settings.etcd_ca_file, cert_file=settings.etcd_cert_file, key_file=settings.etcd_key_file,
            user=settings.etcd_user, password_file=settings.etcd_password_file, timeout=settings.etcd_timeout,
        ))
    return await SqliteStore.open(settings.data_dir, history_keep=settings.history_keep, lock_fd=lock_fd)


def worker_settings(settings: Settings, worker: WorkerRole) -> Settings:
    """The settings of one worker: the supervisor's concrete listen addresses, its own replica
    name (its own audit log), and the Unix socket for worker 0 only: grpcio binds a Unix socket path
    itself and can neither share one nor serve an inherited listening socket."""
    return replace(
        settings,
        listen=worker.listen,
        health_listen=worker.health_listen,
        metrics_listen=worker.metrics_listen,
        replica_name=worker.replica_name,
        unix_socket=settings.unix_socket if worker.index == 0 else "",
        workers=1,
    )


async def serve(settings: Settings, worker: WorkerRole | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls for the grace period. As a worker:
    with the settings of its role, ending when its supervisor ends, and telling it once serving."""
    if worker is not None:
        follow_supervisor(worker.supervisor)
        settings = worker_settings(settings, worker)
    app = App(settings, worker)
    try:
        await app.start()
    except BaseException:
        await app.stop(0)
        raise
    if worker is not None:
        report_ready(worker.ready_fd)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: draining in-flight calls for up to %ss", settings.grace_period)
    await app.stop()
    log.info("stopped")

