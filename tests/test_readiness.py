"""Readiness: gRPC health follows whether the store can take a write, with no restart, and the
separate plaintext health listener answers probes and nothing else.

The store is made unwritable the way it happens for real: another connection holds SQLite's write
lock on the server's database file (`BEGIN IMMEDIATE`, left open).
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smtpconfig.app import SERVICE_NAMES
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.profiles import BASIC_V2, v2_profile
from tests.kits.support import ServerThread, short_dir, token_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL = 0.2


@pytest.fixture
def server() -> Iterator[ServerThread]:
    data_dir = short_dir("rd")
    server = ServerThread(data_dir, readiness_interval=INTERVAL, health_listen="127.0.0.1:0").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def status(target: str, service: str = "") -> int:
    """Health as a probe sees it: no token, no TLS."""
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(target: str, wanted: int, timeout: float) -> float:
    """Poll health until it says `wanted`; return how long that took."""
    started = time.monotonic()
    while True:
        if status(target) == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"health did not turn {wanted} within {timeout}s"
        time.sleep(0.05)


def test_health_follows_a_write_lock_on_the_store_and_recovers_without_restart(server: ServerThread) -> None:
    health_target = f"127.0.0.1:{server.app.health_port}"
    for target in (server.target, health_target):
        assert status(target) == SERVING
        for name in SERVICE_NAMES:
            assert status(target, name) == SERVING, name

    holder = sqlite3.connect(server.data_dir / "smtpconfig.db", isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the store's write lock
        # A few intervals plus the probe's own lock wait; far less than SQLite's 5 s write timeout.
        took = wait_for(server.target, NOT_SERVING, timeout=3.0)
        assert took < 2.0, f"NOT_SERVING only after {took:.2f}s"
        assert status(health_target) == NOT_SERVING
        for name in SERVICE_NAMES:
            assert status(server.target, name) == NOT_SERVING, name
        time.sleep(3 * INTERVAL)
        assert status(server.target) == NOT_SERVING  # it stays so while the lock is held
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    took = wait_for(server.target, SERVING, timeout=3.0)
    assert took < 2.0, f"SERVING again only after {took:.2f}s"
    for name in SERVICE_NAMES:
        assert status(health_target, name) == SERVING, name
    # Same server, serving writes again.
    with server.channel() as channel:
        stub = v2_grpc.ConfigServiceStub(channel)
        stored = stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
        assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=10).etag == stored.etag


def test_the_health_listener_serves_health_to_anyone_and_nothing_else(server: ServerThread) -> None:
    health_target = f"127.0.0.1:{server.app.health_port}"
    assert server.app.health_port not in server.app.ports.values()
    assert status(health_target) == SERVING  # no identity needed
    assert status(health_target, "smtpconfig.v2.ConfigService") == SERVING

    with token_channel(health_target, server.token) as channel:  # not even the admin gets more
        with pytest.raises(grpc.RpcError) as failure:
            v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED

    with grpc.insecure_channel(health_target) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND

    # The main listener, by contrast, serves the API (to callers with a token).
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as failure:
            v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND  # no profile stored yet: served, not UNIMPLEMENTED



def test_a_stop_that_lands_as_a_readiness_check_completes_still_stops() -> None:
    """The race SIGTERM can hit: the stop comes between a store check completing and the readiness
    loop resuming. (asyncio.wait_for on Python 3.11 swallowed a cancel that came then: the loop
    went on checking, and stop() waited for it forever.) The real check runs; only the stop is
    timed, to the moment the race needs, instead of hoping for it."""
    data_dir = short_dir("rs")
    server = ServerThread(data_dir, readiness_interval=0.02).start()
    try:
        store = server.app._store
        check = store.ping
        landed = threading.Event()

        async def check_then_stop() -> None:
            await check()
            if not landed.is_set():
                landed.set()
                server._stopping.set()  # on the server's loop: App.stop() runs next, before we return

        store.ping = check_then_stop
        assert landed.wait(5), "no readiness check ran"
        server._thread.join(5)
        assert not server._thread.is_alive(), "stop() is still waiting for the readiness loop"
    finally:
        if server._thread.is_alive():
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
