"""An edge following a 2-replica central on etcd, given both replicas' addresses.

A change made through replica A reaches a WatchSmtp client of the edge; when the replica the edge
follows stops, the edge moves to the other one and keeps following: a change made there arrives
on the same client stream."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import grpc
import pytest

from smtpconfig.api.auth import token_hash
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.edge import APP_TOKEN, EDGE_PERMISSIONS, EDGE_TOKEN, Event
from tests.kits.edge import auth as _auth
from tests.kits.edge import until as _until
from tests.kits.etcd import EtcdCluster
from tests.kits.profiles import BASIC_V2
from tests.kits.replicas import Replicas, config, rename, update
from tests.kits.support import ServerThread, short_dir

CENTRAL_AUTH = dict(
    tokens=(("edge-a", token_hash(EDGE_TOKEN)),), policy=(("edge-a", EDGE_PERMISSIONS),),
    edge_identities=("edge-a",), watch_progress_seconds=0.5,
)


@pytest.fixture
def central(etcd_cluster: EtcdCluster) -> Iterator[Replicas]:
    group = Replicas(etcd_cluster)
    try:
        yield group
    finally:
        group.close()


def _changes(stream) -> Iterator[v2.WatchSmtpEvent]:
    return (e for e in stream if e.kind != Event.KIND_PROGRESS)


def test_an_edge_follows_a_two_replica_central_and_moves_when_its_replica_stops(
    central: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpconfig.edge")
    a, b = central.start(**CENTRAL_AUTH), central.start(**CENTRAL_AUTH)
    update(config(a), BASIC_V2)
    base = short_dir("edgec")
    (base / "edge.token").write_text(EDGE_TOKEN + "\n")
    edge = ServerThread(
        base / "edge", upstream=(a.target, b.target), upstream_token_file=base / "edge.token",
        tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
    ).start()
    try:
        stub = v2_grpc.ConfigServiceStub(grpc.insecure_channel(edge.target))
        _until(lambda: stub.GetSmtp(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5))
        stream = stub.WatchSmtp(v2.WatchSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=40)
        assert next(stream).kind == Event.KIND_SNAPSHOT
        changes = _changes(stream)
        rename(config(a), "Written on A")
        change = next(changes)
        assert change.kind == Event.KIND_CHANGE and change.profile.sender_name == "Written on A"
        # The edge was given A first and follows it; stop A.
        a.stop()
        central.started.remove(a)
        rename(config(b), "Written on B")
        change = next(changes)
        assert change.kind == Event.KIND_CHANGE and change.profile.sender_name == "Written on B", change
        got = stub.GetSmtp(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)
        assert got.profile.sender_name == "Written on B"
        rename(config(b), "Written on B again")
        assert next(changes).profile.sender_name == "Written on B again"
        stream.cancel()
        followed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("following upstream")]
        assert followed == [f"following upstream {a.target}", f"following upstream {b.target}"]
    finally:
        edge.stop()
        shutil.rmtree(base, ignore_errors=True)
