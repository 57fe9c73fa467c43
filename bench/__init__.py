"""`make bench`: throughput and latency of the service against bare grpcio servers, in one run.

The question it answers: how much of grpcio's unary throughput does smtpconfig keep once its own
work (protobuf, domain, conversion, health and reflection registered) is added, and was grpc.aio
the right server model? Three servers are measured side by side, each in its own process:

  bare-aio      grpc.aio echo server with the service's SERVER_OPTIONS: the ceiling.
  bare-threads  threaded grpcio echo server, same options: the other server model.
  service       `service.server.App` answering `smtpconfig.v2.ConfigService/GetSmtp`, and
                `SecretProviderService/CheckSecret` on a warm cache (a `file` provider secret).

One separate asyncio client process drives every target in turn with the same raw-bytes calls, so
client-side cost is identical and only the server differs. A last phase starts an OpenBao dev
server and compares cold CheckSecret calls (each a cache miss that reads Vault) with direct hvac
reads. See bench/README.md.

Modules: `servers` (the three server processes), `load` (the client process), `seed` (what the
service answers: the profile, the file secret, provider instances), `openbao` (the dev server),
`cold` (the Vault latency phase), `procs` (owning subprocesses), `report` (tables and JSON),
`__main__` (the run).
"""


class BenchError(Exception):
    """The benchmark cannot produce a trustworthy number; the message says why."""


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
# is the same service process answering CheckSecret.
BARE_AIO = "bare-aio"
BARE_THREADS = "bare-threads"
SERVICE = "service"
CHECK_SECRET = "checksecret"
TARGETS = (BARE_AIO, BARE_THREADS, SERVICE, CHECK_SECRET)
LABELS = {
    BARE_AIO: "bare-aio",
    BARE_THREADS: "bare-threads",
    SERVICE: "GetSmtp (v2)",
    CHECK_SECRET: "CheckSecret (warm)",
}

# Suites: targets compared with each other, bare-aio being sent requests as long as the suite's
# service responses. Each suite has its own rows and ratios; they are measured interleaved.
GETSMTP_SUITE = "GetSmtp"
CHECKSECRET_SUITE = "CheckSecret"
SUITES = {GETSMTP_SUITE: (BARE_AIO, SERVICE, BARE_THREADS), CHECKSECRET_SUITE: (BARE_AIO, CHECK_SECRET)}

# The performance goals the report checks: (target, in-flight level, least ratio to bare-aio QPS).
GOAL_IN_FLIGHT = 64
GOAL_RATIO = 0.85
CHECKSECRET_GOAL_RATIO = 0.8
QPS_GOALS = ((SERVICE, GOAL_IN_FLIGHT, GOAL_RATIO), (CHECK_SECRET, GOAL_IN_FLIGHT, CHECKSECRET_GOAL_RATIO))
# Cold Vault resolution through the service: at most this many times a direct hvac read.
VAULT_GOAL_RATIO = 1.3
