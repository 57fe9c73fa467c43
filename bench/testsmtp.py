"""The TestSmtp phase: a full TestSmtp through the service against the same exchange done directly
with smtplib, at 1 in flight, against one local SMTP server (`bench.smtpserver`).

The apply service (started with `ca_bundle` = the bench CA) stores a Basic profile with inline
credentials for localhost:<the SMTP server's port>, UseSSL true (STARTTLS, the port not being 465).
Then, one call at a time:

- service: v2 TestSmtp of the stored profile with a TestRecipient, raw bytes over one channel:
  the servicer, the resolution of the inline credentials, then on the service's SMTP thread: the
  destination check (a getaddrinfo of localhost), connect, EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL,
  RCPT, DATA of a small message; the service answers then, and its thread says QUIT. Every reply
  must report success.
- direct: from this process, smtplib.SMTP("localhost", port), EHLO, STARTTLS (a context trusting
  the same CA, made once as the service makes its own), EHLO, AUTH PLAIN, send_message of a
  message with the same headers and text, built with `email.message.EmailMessage` (the service
  sends the same bytes from a template of its own), QUIT.

Each path makes one uncounted exchange first. Calls alternate direct/service within a round, and
rounds alternate which goes first. The ratio is the median over rounds of the round's service p50
over its direct p50, and its goal is at most `bench.SMTP_GOAL_RATIO`; latencies are reported over
all calls.
"""

from __future__ import annotations

import smtplib
import ssl
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import grpc

from bench import BenchError, authorized_channel
from bench.certs import Certs
from bench.load import latency_stats, percentile
from bench.procs import Child
from bench.smtpserver import PASSWORD, USER
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2

HOST = "localhost"  # the name TLS verifies, on both paths
SENDER, SENDER_NAME, RECIPIENT = "relay@example.com", "Relay", "ops@example.org"
TIMEOUT = 15.0
_SERVICE = v2.DESCRIPTOR.services_by_name["ConfigService"]
TESTSMTP_PATH = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['TestSmtp'].name}"


def measure(target: str, certs: Certs, calls: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Start the SMTP server, store the profile, compare; the SMTP server is stopped on every way out."""
    if calls < rounds:
        raise BenchError(f"--smtp-calls {calls} is too few for {rounds} rounds: give at least {rounds}")
    with Child("SMTP server", "bench.smtpserver", "--cert", str(certs.cert), "--key", str(certs.key)) as server:
        port = server.read_port()
        progress(f"SMTP server (aiosmtpd, STARTTLS, AUTH PLAIN) on 127.0.0.1:{port}")
        context = ssl.create_default_context(cafile=str(certs.ca))
        try:
            with authorized_channel(target) as channel:
                grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
                v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=_profile(port)),
                                                              timeout=TIMEOUT)
                return _compare(lambda: _direct(port, context), channel.unary_unary(TESTSMTP_PATH), calls, rounds)
        except grpc.FutureTimeoutError:
            raise BenchError(f"the apply service at {target} did not accept a connection") from None
        except grpc.RpcError as error:
            raise BenchError(f"TestSmtp failed: {error.code().name}: {error.details()}") from None
        except (OSError, smtplib.SMTPException) as error:
            raise BenchError(f"the direct SMTP exchange failed: {type(error).__name__}: {error}") from None


def _profile(port: int) -> v2.SmtpProfile:
    return v2.SmtpProfile(
        id=1, host=HOST, port=port, use_ssl=True,
        relay_authentication_type=v2.RELAY_AUTHENTICATION_TYPE_BASIC,
        relay_username=secret_pb2.SecretObject(secret_value=USER),
        relay_password=secret_pb2.SecretObject(secret_value=PASSWORD),
        sender_account=SENDER, sender_name=SENDER_NAME,
    )


def _message(port: int) -> EmailMessage:
    """What the service sends (smtpconfig.outbound.message), built per exchange the usual way."""
    message = EmailMessage()
    message["From"] = Address(display_name=SENDER_NAME, addr_spec=SENDER)
    message["To"] = RECIPIENT
    message["Subject"] = "smtpconfig test message"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=SENDER.rpartition("@")[2])
    message.set_content(f"This message was sent by smtpconfig to test the SMTP relay {HOST}:{port}.\n")
    return message


def _direct(port: int, context: ssl.SSLContext) -> None:
    client = smtplib.SMTP(HOST, port, timeout=TIMEOUT)
    try:
        client.ehlo()
        client.starttls(context=context)
        client.ehlo()
        client.login(USER, PASSWORD)  # the server offers PLAIN only
        refused = client.send_message(_message(port), from_addr=SENDER, to_addrs=[RECIPIENT])
        if refused:
            raise BenchError(f"the SMTP server refused the direct message: {refused}")
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _compare(direct: Callable[[], None], test, calls: int, rounds: int) -> dict[str, Any]:
    request = v2.TestSmtpRequest(test_recipient=RECIPIENT).SerializeToString()
    direct()
    replies = [test(request, timeout=TIMEOUT)]  # the warm-up's is checked too, not timed

    perf = time.perf_counter
    times: dict[str, list[list[float]]] = {"direct": [], "service": []}
    for round_ in range(rounds):
        times["direct"].append([])
        times["service"].append([])
        for _ in range(round_ * calls // rounds, (round_ + 1) * calls // rounds):
            for side in ("direct", "service") if round_ % 2 == 0 else ("service", "direct"):
                started = perf()
                if side == "direct":
                    direct()
                else:
                    replies.append(test(request, timeout=TIMEOUT))
                times[side][round_].append(perf() - started)

    parsed = [v2.TestSmtpResponse.FromString(raw) for raw in replies]
    for reply in parsed:
        if not reply.success or [s.name for s in reply.steps][-1:] != ["send"]:
            raise BenchError(f"TestSmtp did not succeed: {reply}")
    per_round = []
    for r, (d, s) in enumerate(zip(times["direct"], times["service"], strict=True)):
        direct_p50, service_p50 = percentile(sorted(d), 0.50) * 1e3, percentile(sorted(s), 0.50) * 1e3
        per_round.append({"round": r + 1, "direct_p50_ms": direct_p50, "service_p50_ms": service_p50,
                          "ratio": service_p50 / direct_p50})
    # The replies' own step durations: resolve, connect, TLS, AUTH and send as the service timed them.
    steps = sorted(sum(s.duration.ToNanoseconds() for s in reply.steps) / 1e9 for reply in parsed[1:])
    return {
        "calls": calls,
        "direct": latency_stats([x for chunk in times["direct"] for x in chunk]),
        "service": {**latency_stats([x for chunk in times["service"] for x in chunk]),
                    "steps_p50_ms": percentile(steps, 0.50) * 1e3},
        "ratio_service_to_direct": statistics.median(r["ratio"] for r in per_round),
        "rounds": per_round,
    }
