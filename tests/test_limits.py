"""The server's limits over a real channel: message size, the default deadline, concurrent calls and
the per-identity rate limits, each refusing with the right status before any backend is reached.

Slow backends are real: an `exec` provider script that sleeps (and logs each run to a file, so a
test counts backend calls exactly), a TCP listener that accepts and never says a word, and an
aiosmtpd server whose received messages are counted.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.calls import ALICE_TOKEN, BOB_TOKEN, CALLERS, invoke, list_records, rid
from tests.kits.profiles import BASIC_V2, anonymous, edit, v1_profile, v2_profile
from tests.kits.smtpkit import SmtpServer
from tests.kits.support import ServerThread, SilentListener, retry_delay, short_dir, wait_until

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def vendor_script(directory: Path) -> tuple[str, Path]:
    """A vendor CLI logging each run; `slow-<seconds>-<anything>` sleeps that long first."""
    calls = directory / "calls"
    path = directory / "vendor-cli"
    path.write_text(f"""#!{sys.executable}
import os, time
name = os.environ["SMTPCONFIG_SECRET_NAME"]
with open({str(calls)!r}, "a") as f:
    f.write(name + "\\n")
if name.startswith("slow-"):
    time.sleep(float(name.split("-")[1]))
print("value-of-" + name)
""")
    path.chmod(0o755)
    return str(path), calls


def vendor_allowed(directory: Path) -> dict:
    """The setting that lets API-made exec instances run `vendor_script(directory)`."""
    return {"exec_commands": ((str(directory / "vendor-cli"),),)}


def runs(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def create_exec(stub: pb_grpc.SecretProviderServiceStub, command: str, **init: str) -> int:
    instance = pb.ProviderInstance(name="vendor", provider_type="exec")
    instance.initialization["Command"].value = json.dumps([command])
    for key, value in init.items():
        instance.initialization[key].value = value
    return stub.CreateProvider(pb.CreateProviderRequest(provider=instance), timeout=10).provider.id


def ref(provider: int, name: str) -> pb.CheckSecretRequest:
    return pb.CheckSecretRequest(secret=secret_pb2.SecretObject(provider=provider, parameters={"Name": name}))



class SlowRelay:
    """A TCP proxy in front of a real SMTP server that holds each client's DATA command (or
    `command`) for `delay` seconds before passing it on: a relay slow to accept the message. `held`
    counts those commands it has seen, `passed` those it has passed on, `hung_up` the clients
    that closed their connection."""

    def __init__(self, upstream: tuple[str, int], delay: float, command: bytes = b"DATA") -> None:
        self._upstream = upstream
        self._delay = delay
        self._command = command
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Condition()
        self.held = 0
        self.passed = 0
        self.hung_up = 0
        self._closing = threading.Event()
        self._open: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        self._sock.settimeout(0.05)
        while not self._closing.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            client.settimeout(None)
            relay = socket.create_connection(self._upstream)
            self._open += [client, relay]
            for pump in (self._to_relay, self._to_client):
                thread = threading.Thread(target=pump, args=(client, relay), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            self._lock.notify_all()

    def _to_relay(self, client: socket.socket, relay: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                if data.upper().startswith(self._command):
                    self._count("held")
                    self._closing.wait(self._delay)
                    relay.sendall(data)
                    self._count("passed")
                else:
                    relay.sendall(data)
            self._count("hung_up")
            relay.shutdown(socket.SHUT_WR)  # the client hung up: so does the relay's peer
        except OSError:
            pass

    def _to_client(self, client: socket.socket, relay: socket.socket) -> None:
        try:
            while data := relay.recv(65536):
                client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def wait_passed(self, count: int, timeout: float) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: self.passed >= count, timeout), f"{self.passed} of {count} passed on"

    def wait_hung_up(self, count: int, timeout: float) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: self.hung_up >= count, timeout), f"{self.hung_up} of {count} hung up"

    def __enter__(self) -> SlowRelay:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._threads[0].join(5)
        self._sock.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)


class Running:
    """A ServerThread with stubs calling as its admin (`v1`, `v2`, `providers`) and stubs on a
    channel without credentials, for calls that bring their own token (`as_v1`, ...)."""

    def __init__(self, **settings) -> None:
        self.data_dir = short_dir("li")
        self.server = ServerThread(self.data_dir, **settings).start()
        self.channel = self.server.channel()
        self.v2 = v2_grpc.ConfigServiceStub(self.channel)
        self.v1 = v1_grpc.ConfigServiceStub(self.channel)
        self.providers = pb_grpc.SecretProviderServiceStub(self.channel)
        self.plain = grpc.insecure_channel(self.server.target)
        self.as_v2 = v2_grpc.ConfigServiceStub(self.plain)
        self.as_v1 = v1_grpc.ConfigServiceStub(self.plain)
        self.as_providers = pb_grpc.SecretProviderServiceStub(self.plain)

    def close(self) -> None:
        self.channel.close()
        self.plain.close()
        self.server.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def running(**settings) -> Iterator[Running]:
    server = Running(**settings)
    try:
        yield server
    finally:
        server.close()


# --- message size ----------------------------------------------------------------------------------


@pytest.fixture
def small_messages() -> Iterator[Running]:
    yield from running(max_message_bytes=4096)


def test_a_request_over_max_message_bytes_is_refused_and_stores_nothing(small_messages: Running) -> None:
    s = small_messages
    fits = v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword={"SecretValue": "p" * 3000})))
    assert 3000 < fits.ByteSize() < 4096
    stored = s.v2.UpdateSmtp(fits, timeout=10)

    too_big = v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=2526, RelayPassword={"SecretValue": "p" * 5000})))
    assert too_big.ByteSize() > 4096
    with pytest.raises(grpc.RpcError) as failure:
        s.v2.UpdateSmtp(too_big, timeout=10)
    assert failure.value.code() == RESOURCE_EXHAUSTED
    assert "larger than max" in failure.value.details()
    after = s.v2.GetSmtp(v2.GetSmtpRequest(), timeout=10)
    assert (after.etag, after.profile.port) == (stored.etag, BASIC_V2["Port"])
    # The same size limit holds on every service, v1 included.
    with pytest.raises(grpc.RpcError) as failure:
        s.v1.UpdateSmtp(v1.UpdateSmtpRequest(profile=v1_profile({"Id": 1, "Host": "h" * 5000})), timeout=10)
    assert failure.value.code() == RESOURCE_EXHAUSTED
    assert s.v2.GetSmtp(v2.GetSmtpRequest(), timeout=10).etag == stored.etag


# --- the default deadline ---------------------------------------------------------------------------


@pytest.fixture
def short_deadline(tmp_path: Path) -> Iterator[Running]:
    yield from running(default_deadline=1.0, smtp_timeout=20.0, provider_timeout=20.0, **vendor_allowed(tmp_path))


def test_a_call_without_a_deadline_gets_the_default_one(short_deadline: Running, tmp_path: Path) -> None:
    s = short_deadline
    command, calls = vendor_script(tmp_path)
    provider = create_exec(s.providers, command)

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        s.providers.CheckSecret(ref(provider, "slow-2.5-a"))  # no deadline of its own
    elapsed = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "default deadline" in failure.value.details()
    assert 0.9 <= elapsed < 2.0, elapsed
    assert runs(calls) == ["slow-2.5-a"]  # it was the backend that took too long

    started = time.monotonic()
    reply = s.providers.CheckSecret(ref(provider, "slow-1.4-b"), timeout=10)  # a longer deadline of its own
    elapsed = time.monotonic() - started
    assert reply.success and not reply.cached
    assert elapsed >= 1.3, elapsed

    with SilentListener() as silent:
        doc = anonymous("127.0.0.1", silent.port)
        request = v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient="ops@example.com")
        request_id = rid("silent")
        started = time.monotonic()
        invoke(s.as_v2.TestSmtp, request, s.server.token, request_id, grpc.StatusCode.DEADLINE_EXCEEDED, timeout=None)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 2.0, elapsed
        assert len(silent.accepted) == 1  # it connected and was left waiting for the greeting

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            s.v2.TestSmtp(request, timeout=2.0)
        elapsed = time.monotonic() - started
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed >= 1.9, f"cut at {elapsed:.2f}s, before the caller's own deadline"
        assert len(silent.accepted) == 2
    record = next(r for r in list_records(s.channel, s.server.token) if r.request_id == request_id)
    assert (record.method, record.outcome) == ("v2.ConfigService/TestSmtp", "DEADLINE_EXCEEDED")


def _records_of(s: Running, *request_ids: str) -> dict[str, str]:
    """request id -> outcome of those on the trail, waiting up to 5 s for all of them (records of
    cancelled calls are written just after the caller has heard of its deadline)."""
    deadline = time.monotonic() + 5
    while True:
        found = {r.request_id: r.outcome for r in list_records(s.channel, s.server.token) if r.request_id in request_ids}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_an_abandoned_smtp_test_sends_nothing(short_deadline: Running) -> None:
    """The caller's deadline (or the server's default one) passes while the relay is slow to take
    DATA: the test is abandoned there, and the message is never sent once the relay answers."""
    s = short_deadline
    delay = 2.0  # well past the default deadline (1 s) and the client deadline below (0.5 s)
    with SmtpServer("plain") as smtp, SlowRelay((smtp.host, smtp.port), delay) as relay:
        doc = anonymous("127.0.0.1", relay.port)

        def start(recipient: str, request_id: str, timeout: float | None):
            request = v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient=recipient)
            return s.as_v2.TestSmtp.future(request, timeout=timeout, metadata=[
                ("authorization", f"Bearer {s.server.token}"), ("x-request-id", request_id)])

        # Side by side through the same slow relay: one caller waits long enough (and proves the
        # relay delivers), one has its own short deadline, one relies on the server's default.
        waits, gives_up, defaulted = rid("waits"), rid("gives-up"), rid("defaulted")
        started = time.monotonic()
        calls = {
            waits: start("waits@example.com", waits, 10.0),
            gives_up: start("gives-up@example.com", gives_up, 0.5),
            defaulted: start("defaulted@example.com", defaulted, None),
        }
        for request_id in (gives_up, defaulted):
            with pytest.raises(grpc.RpcError) as failure:
                calls[request_id].result()
            assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, request_id
        assert time.monotonic() - started < delay, "the deadlines passed only after the relay answered"
        assert relay.held == 3  # every test was waiting on the slow DATA when its caller left
        assert calls[waits].result().success
        relay.wait_passed(3, timeout=5)  # the relay has now taken DATA from all three connections
        time.sleep(0.5)  # time enough for a message to follow DATA, had anyone sent one
        assert [m.rcpt_tos for m in smtp.messages] == [("waits@example.com",)]

    assert _records_of(s, waits, gives_up, defaulted) == {
        waits: "OK", gives_up: "CANCELLED", defaulted: "DEADLINE_EXCEEDED"}


def test_the_answer_does_not_wait_for_the_relays_goodbye(short_deadline: Running) -> None:
    """The outcome is known once the relay took the message: TestSmtp answers then, and its thread
    still says QUIT and closes the connection once the (slow) relay answers that."""
    s = short_deadline
    delay = 2.0
    with SmtpServer("plain") as smtp, SlowRelay((smtp.host, smtp.port), delay, command=b"QUIT") as relay:
        request = v2.TestSmtpRequest(profile=v2_profile(anonymous("127.0.0.1", relay.port)),
                                     test_recipient="ops@example.com")
        started = time.monotonic()
        reply = s.v2.TestSmtp(request, timeout=10)
        assert time.monotonic() - started < delay, "the answer waited for the reply to QUIT"
        assert reply.success and [step.name for step in reply.steps][-1] == "send"
        assert [m.rcpt_tos for m in smtp.messages] == [("ops@example.com",)]
        wait_until(lambda: relay.held == 1, timeout=delay / 2)  # QUIT said after the answer...
        assert relay.hung_up == 0  # ...and the connection open while its reply is held
        relay.wait_passed(1, timeout=5)
        relay.wait_hung_up(1, timeout=5)  # the reply came and the service closed the connection


POOL = 16  # threads running SMTP tests (smtpconfig.outbound.apply.Applier's `workers`)


def test_abandoned_smtp_tests_give_their_threads_back_at_once(short_deadline: Running) -> None:
    """More abandoned tests than there are threads, each stuck on a relay that never answers
    (the SMTP timeout is 20 s): the next test still runs straight away."""
    s = short_deadline
    with SilentListener() as silent:
        doc = anonymous("127.0.0.1", silent.port)
        request = v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient="ops@example.com")
        abandoned = [rid("abandoned") for _ in range(POOL + 1)]
        calls = [s.as_v2.TestSmtp.future(request, timeout=0.3, metadata=[
            ("authorization", f"Bearer {s.server.token}"), ("x-request-id", request_id)]) for request_id in abandoned]
        for call in calls:
            with pytest.raises(grpc.RpcError) as failure:
                call.result()
            assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: len(silent.accepted) >= POOL, timeout=5)
        # Every connection the abandoned tests opened is closed by the server at once, not after
        # the SMTP timeout. (The last test dials only if a thread came free before its own
        # deadline passed.)
        for conn in silent.accepted:
            conn.settimeout(3.0)
            assert conn.recv(1) == b""
        assert len(silent.accepted) <= POOL + 1

        with SmtpServer("plain") as smtp:
            good = v2.TestSmtpRequest(profile=v2_profile(anonymous(smtp.host, smtp.port)), test_recipient="ops@example.com")
            started = time.monotonic()
            assert s.v2.TestSmtp(good, timeout=5).success
            assert time.monotonic() - started < 1.0
            smtp.wait_for_message()
    assert set(_records_of(s, *abandoned).values()) == {"CANCELLED"}


# --- concurrent calls -------------------------------------------------------------------------------


@pytest.fixture
def two_at_a_time(tmp_path: Path) -> Iterator[Running]:
    yield from running(max_concurrent_rpcs=2, provider_timeout=20.0, **vendor_allowed(tmp_path))


def test_calls_beyond_max_concurrent_rpcs_are_refused(two_at_a_time: Running, tmp_path: Path) -> None:
    s = two_at_a_time
    command, calls = vendor_script(tmp_path)
    provider = create_exec(s.providers, command)
    slow = [s.providers.CheckSecret.future(ref(provider, f"slow-1.5-{n}"), timeout=20) for n in range(2)]
    wait_until(lambda: len(runs(calls)) == 2)  # both are in the backend, holding their slots

    with pytest.raises(grpc.RpcError) as failure:
        s.providers.CheckSecret(ref(provider, "slow-0-third"), timeout=10)
    assert failure.value.code() == RESOURCE_EXHAUSTED
    assert "(max_concurrent_rpcs)" in failure.value.details()
    assert retry_delay(failure.value) > 0
    with pytest.raises(grpc.RpcError) as failure:
        s.v2.GetSmtp(v2.GetSmtpRequest(), timeout=10)
    assert failure.value.code() == RESOURCE_EXHAUSTED
    # The refusals are the server's own, so they are counted like any other answer (just after
    # it has gone out).
    counted = s.server.app.metrics.registry.get_sample_value
    for method in ("v2.SecretProviderService/CheckSecret", "v2.ConfigService/GetSmtp"):
        labels = {"method": method, "code": "RESOURCE_EXHAUSTED"}
        wait_until(lambda labels=labels: counted("smtpconfig_rpc_requests_total", labels) == 1)
    assert all(f.result().success for f in slow)
    assert sorted(runs(calls)) == ["slow-1.5-0", "slow-1.5-1"]  # the refused call never ran

    # Slots free again: calls pass, up to two at once.
    assert s.providers.CheckSecret(ref(provider, "fast"), timeout=10).success
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert all(r.success for r in pool.map(
            lambda n: s.providers.CheckSecret(ref(provider, f"slow-0.3-{n}"), timeout=10), range(2)))


# --- per-identity rate limits -------------------------------------------------------------------------


@pytest.fixture
def resolve_limited(tmp_path: Path) -> Iterator[Running]:
    yield from running(resolve_rate=1.0, resolve_burst=3, **CALLERS, **vendor_allowed(tmp_path))


def test_a_wait_under_a_tenth_of_a_second_is_not_said_as_zero() -> None:
    s = Running(resolve_rate=10.0, resolve_burst=1)
    try:
        check = pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value="x"))
        s.providers.CheckSecret(check, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            s.providers.CheckSecret(check, timeout=10)  # within the 100 ms the bucket takes to refill
    finally:
        s.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    said = re.search(r"retry in (\d+) ms", refused.value.details())
    assert said and 1 <= int(said.group(1)) <= 100, refused.value.details()


def test_resolutions_are_rate_limited_per_identity(resolve_limited: Running, tmp_path: Path) -> None:
    s = resolve_limited
    command, calls = vendor_script(tmp_path)
    provider = create_exec(s.providers, command, TtlSeconds="0")  # no caching: every resolution runs it
    doc = edit(BASIC_V2, RelayPassword={"Provider": provider, "Parameters": {"Name": "smtp-password"}})
    s.v2.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)), timeout=10)

    def resolve(token: str, code=grpc.StatusCode.OK):
        return invoke(s.as_v2.ResolveSmtp, v2.ResolveSmtpRequest(), token, rid("resolve"), code)

    def check(token: str, code=grpc.StatusCode.OK):
        return invoke(s.as_providers.CheckSecret, pb.CheckSecretRequest(profile_field="RelayPassword"), token,
                      rid("check"), code)

    for _ in range(3):
        assert resolve(ALICE_TOKEN).credentials.password == "value-of-smtp-password"
    refused = resolve(ALICE_TOKEN, RESOURCE_EXHAUSTED)
    delay = retry_delay(refused)
    assert 0 < delay <= 1.0, delay
    assert "resolve rate limit" in refused.details()
    check(ALICE_TOKEN, RESOURCE_EXHAUSTED)  # CheckSecret draws on the same bucket
    assert len(runs(calls)) == 3  # refused calls never reached the backend

    # Another identity has a bucket of its own; its checks and resolutions share it.
    resolve(BOB_TOKEN)
    check(BOB_TOKEN)
    check(BOB_TOKEN)
    assert retry_delay(resolve(BOB_TOKEN, RESOURCE_EXHAUSTED)) > 0
    assert len(runs(calls)) == 6

    # The refusal is audited like any other outcome of an audited method.
    outcomes = [(r.identity, r.method, r.outcome) for r in list_records(s.channel, s.server.token)]
    assert outcomes.count(("alice", "v2.ConfigService/ResolveSmtp", "RESOURCE_EXHAUSTED")) == 1
    assert outcomes.count(("alice", "v2.SecretProviderService/CheckSecret", "RESOURCE_EXHAUSTED")) == 1

    time.sleep(retry_delay(resolve(ALICE_TOKEN, RESOURCE_EXHAUSTED)) + 0.1)  # the bucket refills
    assert resolve(ALICE_TOKEN).credentials.password == "value-of-smtp-password"
    assert len(runs(calls)) == 7
    # The admin (a third identity) was never limited by the others' use.
    assert s.v2.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10).credentials.password


@pytest.fixture
def test_limited() -> Iterator[Running]:
    yield from running(test_rate=1.0, test_burst=2, smtp_timeout=5.0, **CALLERS)


def test_smtp_tests_are_rate_limited_per_identity(test_limited: Running) -> None:
    s = test_limited
    with SmtpServer("plain") as smtp:
        doc = anonymous(smtp.host, smtp.port)
        v2_request = v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient="ops@example.com")
        v1_request = v1.TestSmtpRequest(profile=v1_profile(doc), test_recipient="ops@example.com")

        assert invoke(s.as_v2.TestSmtp, v2_request, ALICE_TOKEN, rid("test")).success
        invoke(s.as_v1.TestSmtp, v1_request, ALICE_TOKEN, rid("test"))  # v1 and v2 share the bucket
        refused = invoke(s.as_v2.TestSmtp, v2_request, ALICE_TOKEN, rid("test"), RESOURCE_EXHAUSTED)
        delay = retry_delay(refused)
        assert 0 < delay <= 1.0, delay
        invoke(s.as_v1.TestSmtp, v1_request, ALICE_TOKEN, rid("test"), RESOURCE_EXHAUSTED)
        smtp.wait_for_message(count=2)
        time.sleep(0.2)
        assert len(smtp.messages) == 2  # refused tests never reached the SMTP server

        assert invoke(s.as_v2.TestSmtp, v2_request, BOB_TOKEN, rid("test")).success
        smtp.wait_for_message(count=3)

        time.sleep(retry_delay(invoke(s.as_v2.TestSmtp, v2_request, ALICE_TOKEN, rid("test"), RESOURCE_EXHAUSTED)) + 0.1)
        assert invoke(s.as_v2.TestSmtp, v2_request, ALICE_TOKEN, rid("test")).success
        smtp.wait_for_message(count=4)
        assert len(smtp.messages) == 4
