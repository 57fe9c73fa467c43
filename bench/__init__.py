"""`make bench`: throughput and latency of the service against bare grpcio servers, in one run.

The question it answers: how much of grpcio's unary throughput does smtpconfig keep once its own
work (protobuf, domain, conversion, health and reflection registered) is added, and was grpc.aio
the right server model? Three servers are measured side by side, each in its own process:

  bare-aio      grpc.aio echo server with the service's SERVER_OPTIONS: the ceiling.
  bare-threads  threaded grpcio echo server, same options: the other server model.
  service       `service.server.App` answering `smtpconfig.v2.ConfigService/GetSmtp`, and
                `SecretProviderService/CheckSecret` on a warm cache (a `file` provider secret).

A second service process (the "apply" service: its stored profile differs) answers `ResolveSmtp`
for a profile whose password is a `file` provider reference, on a warm cache.

One separate asyncio client process drives every target in turn with the same raw-bytes calls, so
client-side cost is identical and only the server differs. Two latency phases follow at 1 in
flight: TestSmtp through the apply service against a local aiosmtpd server (STARTTLS, AUTH PLAIN)
next to the same exchange done directly with smtplib; then, with an OpenBao dev server, cold
CheckSecret calls (each a cache miss that reads Vault) next to direct hvac reads. See
bench/README.md.

Modules: `servers` (the server processes), `load` (the client process), `seed` (what the service
answers: the profiles, the file secret, provider instances), `smtpserver` (the SMTP server process
and its certificates), `testsmtp` (the TestSmtp phase), `openbao` (the dev server), `cold` (the
Vault latency phase), `procs` (owning subprocesses), `report` (tables and JSON), `__main__` (the run).
"""


class BenchError(Exception):
    """The benchmark cannot produce a trustworthy number; the message says why."""


# The echo servers' one method. Bytes in, the same bytes out, no (de)serialization.
# Every client call carries this bearer token, the bare servers' calls included, so both sides
# receive the same bytes. The service admits it as the identity "bench" with every permission.
BENCH_TOKEN = "sct_benchmark-only-token-never-use-elsewhere"
AUTH = (("authorization", f"Bearer {BENCH_TOKEN}"),)



def authorized_channel(target: str):
    """A blocking channel whose every call carries `AUTH` (seeding and the cold comparisons)."""
    import grpc

    class _Auth(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(details._replace(metadata=tuple(details.metadata or ()) + AUTH), request)

    return grpc.intercept_channel(grpc.insecure_channel(target), _Auth())


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
TARGETS = (BARE_AIO, BARE_THREADS, SERVICE, CHECK_SECRET, RESOLVE_SMTP)
LABELS = {
    BARE_AIO: "bare-aio",
    BARE_THREADS: "bare-threads",
    SERVICE: "GetSmtp (v2)",
    CHECK_SECRET: "CheckSecret (warm)",
    RESOLVE_SMTP: "ResolveSmtp (warm)",
}

# Suites: targets compared with each other, bare-aio being sent requests as long as the suite's
# service responses. Each suite has its own rows and ratios; they are measured interleaved.
GETSMTP_SUITE = "GetSmtp"
CHECKSECRET_SUITE = "CheckSecret"
RESOLVESMTP_SUITE = "ResolveSmtp"
SUITES = {
    GETSMTP_SUITE: (BARE_AIO, SERVICE, BARE_THREADS),
    CHECKSECRET_SUITE: (BARE_AIO, CHECK_SECRET),
    RESOLVESMTP_SUITE: (BARE_AIO, RESOLVE_SMTP),
}

# The performance goals the report checks: (target, in-flight level, least ratio to bare-aio QPS).
GOAL_IN_FLIGHT = 64
GOAL_RATIO = 0.85
CHECKSECRET_GOAL_RATIO = 0.8
RESOLVESMTP_GOAL_RATIO = 0.8
QPS_GOALS = (
    (SERVICE, GOAL_IN_FLIGHT, GOAL_RATIO),
    (CHECK_SECRET, GOAL_IN_FLIGHT, CHECKSECRET_GOAL_RATIO),
    (RESOLVE_SMTP, GOAL_IN_FLIGHT, RESOLVESMTP_GOAL_RATIO),
)
# Cold Vault resolution through the service: at most this many times a direct hvac read.
VAULT_GOAL_RATIO = 1.3
