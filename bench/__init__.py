"""`make bench`: throughput and latency of the service against bare grpcio servers, in one run.

The question it answers: how much of grpcio's unary throughput does smtpconfig keep once its own
work (protobuf, domain, conversion, health and reflection registered) is added, and was grpc.aio
the right server model? Three servers are measured side by side, each in its own process:

  bare-aio      grpc.aio echo server with the service's SERVER_OPTIONS: the ceiling.
  bare-threads  threaded grpcio echo server, same options: the other server model.
  service       `smtpconfig.app.App` answering `smtpconfig.v2.ConfigService/GetSmtp`, and
                `SecretProviderService/CheckSecret` on a warm cache (a `file` provider secret).

Unless `--skip-tls`, GetSmtp is also measured over TLS, against two more service processes and two
more bare-aio ones: server TLS with the bearer token, and mTLS where the client certificate is the
identity; each bare-aio twin uses the same credentials, so the report separates what TLS itself
costs from what the service and its authentication cost.

A second service process (the "apply" service: its stored profile differs) answers `ResolveSmtp`
for a profile whose password is a `file` provider reference, on a warm cache. Next to each of the
three methods, at the highest level in flight, an echo that makes every check of the service's
guard, and for the two audited ones appends an audit line (`stages.CheckedEcho`, `FLOORS`), shows
what such a server pays with no method at all.

One separate asyncio client process drives every target in turn with the same raw-bytes calls, so
client-side cost is identical and only the server differs. Two latency phases follow at 1 in
flight: TestSmtp through the apply service against a local aiosmtpd server (STARTTLS, AUTH PLAIN)
next to the same exchange done directly with smtplib; then, with an OpenBao dev server, cold
CheckSecret calls (each a cache miss that reads Vault) next to a bare-aio echo plus a direct hvac
read, and warm ResolveSmtp calls of a Vault-backed profile next to the direct reads. Then the edge
phase (`edgephase`): ResolveSmtp through an edge on a Unix socket, following the service as its
central, against bare-aio on a Unix socket and against direct hvac reads. See bench/README.md.

The run also reads the resident memory of each GetSmtp server: idle, under load and at its peak.

Modules: `servers` (the server processes), `load` (the client process), `seed` (what the service
answers: the profiles, the file secret, provider instances), `certs` (the throwaway CA and its
leaves), `smtpserver` (the SMTP server process), `testsmtp` (the TestSmtp phase), `openbao` (the
dev server), `cold` (the Vault latency phase), `procs` (owning subprocesses), `report` (tables and
JSON), `__main__` (the run); `profile` (`make profile`: where each server's CPU per call goes, from
perf samples); `stages` (`make stages`: what each part of a call's handling costs inside the
server, and the least a server in Python pays for it); `tightloop` (our Python per call alone,
without grpcio).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class BenchError(Exception):
    """The benchmark cannot produce a trustworthy number; the message says why."""


# Every client call carries this bearer token, the bare servers' calls included, so both sides
# receive the same bytes. The service admits it as the identity "bench" with every permission.
BENCH_TOKEN = "sct_benchmark-only-token-never-use-elsewhere"
AUTH = (("authorization", f"Bearer {BENCH_TOKEN}"),)


@dataclass(frozen=True)
class Transport:
    """How a client reaches a target: plaintext TCP (`tls` ""), server TLS ("tls": trust the CA in
    `ca`) or mTLS ("mtls": also present the client certificate `cert` with its `key`). Over mTLS the
    certificate is the caller's identity and no token is sent, to the bare servers neither, so each
    bare server receives the same bytes as the service it is compared with."""

    tls: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.tls == MTLS else AUTH

    def credentials(self):
        """grpc.ChannelCredentials for TLS, None for plaintext."""
        if not self.tls:
            return None
        import grpc

        client = (Path(self.key).read_bytes(), Path(self.cert).read_bytes()) if self.tls == MTLS else (None, None)
        return grpc.ssl_channel_credentials(Path(self.ca).read_bytes(), *client)


PLAINTEXT = Transport()
TLS = "tls"
MTLS = "mtls"


def authorized_channel(target: str, transport: Transport = PLAINTEXT):
    """A blocking channel whose every call carries `transport`'s metadata (`AUTH` but over mTLS):
    seeding and the cold comparisons."""
    import grpc

    metadata = transport.metadata

    class _Auth(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(details._replace(metadata=tuple(details.metadata or ()) + metadata), request)

    credentials = transport.credentials()
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    return grpc.intercept_channel(channel, _Auth())


# The echo servers' one method. Bytes in, the same bytes out, no (de)serialization.
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = "Echo"
ECHO_PATH = f"/{ECHO_SERVICE}/{ECHO_METHOD}"

# The echo servers' second method: answers after WAIT_SECONDS without using the CPU, as an
# apply-time call does while it waits on an SMTP server, Vault or an identity provider.
WAIT_METHOD = "Wait"
WAIT_PATH = f"/{ECHO_SERVICE}/{WAIT_METHOD}"
WAIT_SECONDS = 0.2

# Target names, in the order they appear in the report. `service` answers GetSmtp, `checksecret`
# is the same service process answering CheckSecret, `resolvesmtp` the apply service process
# answering ResolveSmtp.
BARE_AIO = "bare-aio"
BARE_THREADS = "bare-threads"
SERVICE = "service"
CHECK_SECRET = "checksecret"
RESOLVE_SMTP = "resolvesmtp"
# GetSmtp over TLS (`--skip-tls` leaves them out): a service process and a bare-aio one per kind,
# the bare one with the same server credentials (smtpconfig.api.tls.ReloadingCertificates).
BARE_AIO_TLS = "bare-aio-tls"
SERVICE_TLS = "service-tls"
BARE_AIO_MTLS = "bare-aio-mtls"
SERVICE_MTLS = "service-mtls"
TLS_TARGETS = (BARE_AIO_TLS, SERVICE_TLS, BARE_AIO_MTLS, SERVICE_MTLS)
# What a server that makes the guard's checks pays with no method (`bench.stages.CheckedEcho`:
# every check of the guard written inline, and for an audited method one chained audit line),
# answering the method's own answer bytes to its own requests: one process for each suite, measured
# at the highest in-flight level only, where the QPS goals are. Its ratio to bare-aio is the floor
# under the service's, and the service's ratio to it is what the method (and its record) cost on top.
FLOOR_GETSMTP = "floor-getsmtp"
FLOOR_CHECKSECRET = "floor-checksecret"
FLOOR_RESOLVESMTP = "floor-resolvesmtp"
FLOORS = {SERVICE: FLOOR_GETSMTP, CHECK_SECRET: FLOOR_CHECKSECRET, RESOLVE_SMTP: FLOOR_RESOLVESMTP}
TARGETS = (BARE_AIO, BARE_THREADS, SERVICE, FLOOR_GETSMTP, *TLS_TARGETS, CHECK_SECRET, FLOOR_CHECKSECRET,
           RESOLVE_SMTP, FLOOR_RESOLVESMTP)
LABELS = {
    BARE_AIO: "bare-aio",
    BARE_THREADS: "bare-threads",
    SERVICE: "GetSmtp (v2)",
    BARE_AIO_TLS: "bare-aio TLS",
    SERVICE_TLS: "GetSmtp (v2) TLS+token",
    BARE_AIO_MTLS: "bare-aio mTLS",
    SERVICE_MTLS: "GetSmtp (v2) mTLS",
    CHECK_SECRET: "CheckSecret (warm)",
    RESOLVE_SMTP: "ResolveSmtp (warm)",
    FLOOR_GETSMTP: "checks echo (no record)",
    FLOOR_CHECKSECRET: "checks+record echo",
    FLOOR_RESOLVESMTP: "checks+record echo",
}
# The transport of each target reached over TLS; all others are plaintext TCP with the token.
TRANSPORTS = {BARE_AIO_TLS: TLS, SERVICE_TLS: TLS, BARE_AIO_MTLS: MTLS, SERVICE_MTLS: MTLS}
# Besides bare-aio (plaintext), the TLS services are compared with the bare-aio server over the
# same credentials: the difference is then the service and its authentication, TLS being in both.
BASELINES = {SERVICE_TLS: BARE_AIO_TLS, SERVICE_MTLS: BARE_AIO_MTLS}

# Suites: targets compared with each other, bare-aio being sent requests as long as the suite's
# service responses. Each suite has its own rows and ratios; they are measured interleaved.
GETSMTP_SUITE = "GetSmtp"
CHECKSECRET_SUITE = "CheckSecret"
RESOLVESMTP_SUITE = "ResolveSmtp"
# Each suite is a sequence of blocks: the targets of a block are measured back to back, each round
# rotating which goes first, so a target and the baseline it is divided by are measured close together.
SUITES = {
    GETSMTP_SUITE: ((BARE_AIO, SERVICE, BARE_THREADS, FLOOR_GETSMTP), (BARE_AIO_TLS, SERVICE_TLS), (BARE_AIO_MTLS, SERVICE_MTLS)),
    CHECKSECRET_SUITE: ((BARE_AIO, CHECK_SECRET, FLOOR_CHECKSECRET),),
    RESOLVESMTP_SUITE: ((BARE_AIO, RESOLVE_SMTP, FLOOR_RESOLVESMTP),),
}

# The performance goals the report checks: (target, in-flight level, least ratio to bare-aio QPS).
GOAL_IN_FLIGHT = 64
GOAL_RATIO = 0.85
CHECKSECRET_GOAL_RATIO = 0.8
RESOLVESMTP_GOAL_RATIO = 0.8
# GetSmtp one call at a time: the service's latency against grpc.aio's own round trip.
SINGLE_GOAL_RATIO = 0.9
QPS_GOALS = (
    (SERVICE, GOAL_IN_FLIGHT, GOAL_RATIO),
    (SERVICE, 1, SINGLE_GOAL_RATIO),
    (CHECK_SECRET, GOAL_IN_FLIGHT, CHECKSECRET_GOAL_RATIO),
    (RESOLVE_SMTP, GOAL_IN_FLIGHT, RESOLVESMTP_GOAL_RATIO),
)
# The Vault phase (`bench.cold`), at 1 in flight: a cold CheckSecret through the service at most this
# many times a bare-aio echo round trip plus a direct hvac read; a warm ResolveSmtp of a profile whose
# password is a Vault secret below this share of a direct hvac read.
VAULT_GOAL_RATIO = 1.15
VAULT_RESOLVE_GOAL_RATIO = 0.5
# A full TestSmtp through the service: its p50 at most this many times that of the same exchange
# done directly with smtplib (median over paired rounds).
SMTP_GOAL_RATIO = 1.2
# The edge phase (`bench.edgephase`): ResolveSmtp through an edge on a Unix socket, warm, at
# EDGE_IN_FLIGHT against bare-aio on a Unix socket (at least this share of its QPS), and its p50 at 1
# in flight against a direct hvac read of the same secret (below this share of it).
EDGE = "edge"
EDGE_IN_FLIGHT = 64
EDGE_GOAL_RATIO = 0.8
EDGE_LATENCY_GOAL_RATIO = 0.5
# The workers phase (`bench.workersphase`): GetSmtp QPS of `serve --workers 2` over `--workers 1`
# at WORKERS_IN_FLIGHT, at least this ratio.
WORKERS_IN_FLIGHT = 64
WORKERS_GOAL_RATIO = 1.6
# Resident memory of a serving process, idle after start (VmRSS): the service's, and each worker's.
MEMORY_GOAL_MIB = 80.0
