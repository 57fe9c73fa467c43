"""`make bench`: throughput and latency of the service against bare grpcio servers, in one run.

The question it answers: how much of grpcio's unary throughput does smtpconfig keep once its own
work (protobuf, domain, conversion, health and reflection registered) is added, and was grpc.aio
the right server model? Three servers are measured side by side, each in its own process:

  bare-aio      grpc.aio echo server with the service's SERVER_OPTIONS: the ceiling.
  bare-threads  threaded grpcio echo server, same options: the other server model.
  service       `service.server.App` answering `smtpconfig.v2.ConfigService/GetSmtp`.

One separate asyncio client process drives every target in turn with the same raw-bytes calls, so
client-side cost is identical and only the server differs. See bench/README.md.

Modules: `servers` (the three server processes), `load` (the client process), `seed` (stores the
profile GetSmtp returns), `procs` (owning subprocesses), `report` (table and JSON), `__main__`
(the run).
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

# Target names, in the order they appear in the report.
BARE_AIO = "bare-aio"
BARE_THREADS = "bare-threads"
SERVICE = "service"
TARGETS = (BARE_AIO, BARE_THREADS, SERVICE)
LABELS = {BARE_AIO: "bare-aio", BARE_THREADS: "bare-threads", SERVICE: "GetSmtp (v2)"}

# The performance goal the report checks.
GOAL_IN_FLIGHT = 64
GOAL_RATIO = 0.85
