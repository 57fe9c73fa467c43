"""Cluster mode: several smtpconfig replicas on one real 3-member etcd.

Replicas are `ServerThread`s (or real processes where a kill -9 is the point) with store = etcd,
each under a key prefix of its own test, sharing one sealing key file. Tests that kill or stop etcd
members use a cluster of their own (`own_etcd_cluster`)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smtpconfig.domain.profiles import PROFILE_KEY
from smtpconfig.store.base import Change, Resync
from smtpconfig.store.etcd import EtcdOptions, EtcdStore
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as providers_grpc
from tests.kits.etcd import EtcdCluster, new_prefix, write_key_file
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.replicas import Replicas, config, rename, update
from tests.kits.support import ServerProcess, ServerThread, short_dir, wait_until

STORE = "smtpconfig.store"


@pytest.fixture
def replicas(etcd_cluster: EtcdCluster) -> Iterator[Replicas]:
    group = Replicas(etcd_cluster)
    yield group
    group.close()


@pytest.fixture
def own_replicas(own_etcd_cluster: EtcdCluster) -> Iterator[Replicas]:
    group = Replicas(own_etcd_cluster)
    yield group
    group.close()


def health(server: ServerThread, name: str) -> int:
    with grpc.insecure_channel(server.target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status


def sender_name(stub: v2_grpc.ConfigServiceStub) -> str:
    return stub.GetSmtp(v2.GetSmtpRequest(), timeout=5).profile.sender_name


# --- replicas share one state -------------------------------------------------------------------


def test_replicas_see_each_others_writes(replicas: Replicas) -> None:
    a, b = replicas.start(), replicas.start()
    written = update(config(a), BASIC_V2)
    wait_until(lambda: _etag_or_none(config(b)) == written.etag, timeout=5)
    rename(config(b), "Written on B")
    wait_until(lambda: sender_name(config(a)) == "Written on B", timeout=5)
    assert health(a, STORE) == health_pb2.HealthCheckResponse.SERVING
    assert health(a, "") == health_pb2.HealthCheckResponse.SERVING


def _etag_or_none(stub: v2_grpc.ConfigServiceStub) -> str | None:
    try:
        return stub.GetSmtp(v2.GetSmtpRequest(), timeout=5).etag
    except grpc.RpcError:
        return None


def test_same_etag_on_two_replicas_exactly_one_wins(replicas: Replicas) -> None:
    a, b = replicas.start(), replicas.start()
    etag = update(config(a), BASIC_V2).etag
    wait_until(lambda: _etag_or_none(config(b)) == etag, timeout=5)
    outcomes: dict[str, object] = {}

    def write(name: str, server: ServerThread) -> None:
        try:
            outcomes[name] = update(config(server), edit(BASIC_V2, SenderName=name), etag=etag)
        except grpc.RpcError as error:
            outcomes[name] = error.code()

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in (("A", a), ("B", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(str(o) for o in outcomes.values() if isinstance(o, grpc.StatusCode))
    assert codes == [str(grpc.StatusCode.ABORTED)], outcomes
    winner = next(n for n, o in outcomes.items() if not isinstance(o, grpc.StatusCode))
    wait_until(lambda: sender_name(config(a)) == winner == sender_name(config(b)), timeout=5)


def test_a_replica_with_another_key_refuses_to_start_naming_the_key(replicas: Replicas) -> None:
    a = replicas.start()
    update(config(a), BASIC_V2)
    other = write_key_file(short_dir("key2"))
    replicas.dirs.append(other.parent)
    with pytest.raises(Exception, match="was encrypted with key [0-9a-f]{12}") as refused:
        replicas.start(key_file=other)
    assert "start the server with the key the data was written with (key id" in str(refused.value)


def test_a_provider_instance_changed_on_one_replica_is_used_by_the_next_resolution_on_another(
    replicas: Replicas, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for directory, value in ((old, "old-password"), (new, "new-password")):
        directory.mkdir()
        (directory / "smtp-password").write_text(value)
    a, b = replicas.start(file_directories=(tmp_path,)), replicas.start(file_directories=(tmp_path,))
    providers = providers_grpc.SecretProviderServiceStub(a.channel())
    instance = providers_pb.ProviderInstance(name="mounted", provider_type="file")
    instance.initialization["Directory"].value = str(old)
    created = providers.CreateProvider(providers_pb.CreateProviderRequest(provider=instance)).provider
    password = secret_pb2.SecretObject(provider=created.id, parameters={"File": "smtp-password"})
    doc = edit(BASIC_V2)
    profile = v2_profile(doc)
    profile.relay_password.CopyFrom(password)
    etag = config(a).UpdateSmtp(v2.UpdateSmtpRequest(profile=profile), timeout=15).etag
    wait_until(lambda: _etag_or_none(config(b)) == etag, timeout=5)
    assert config(b).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10).credentials.password == "old-password"
    change = providers_pb.UpdateProviderRequest(provider=providers_pb.ProviderInstance(id=created.id))
    change.provider.initialization["Directory"].value = str(new)
    change.update_mask.paths.append("Initialization")
    providers.UpdateProvider(change, timeout=15)
    wait_until(
        lambda: config(b).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10).credentials.password == "new-password",
        timeout=5,
    )


# --- etcd in trouble ----------------------------------------------------------------------------


def test_etcd_stopped_reads_and_resolutions_go_on_writes_unavailable_then_recover(own_replicas: Replicas) -> None:
    cluster = own_replicas.cluster
    a = own_replicas.start()
    stub = config(a)
    etag = update(stub, BASIC_V2).etag
    stream = stub.WatchSmtp(v2.WatchSmtpRequest(), timeout=60)
    assert next(stream).kind == v2.WatchSmtpEvent.KIND_SNAPSHOT
    for member in cluster.members:
        cluster.kill9(member)
    stopped_at = time.monotonic()
    wait_until(lambda: health(a, STORE) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
    # Its profile is only as fresh as its watch: WatchSmtp clients are sent to another replica.
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach its store" in (ended.value.details() or "")
    with pytest.raises(grpc.RpcError) as refused:
        rename(stub, "while etcd is down")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the store (etcd at 127.0.0.1:" in (refused.value.details() or "")
    while time.monotonic() - stopped_at < 10:  # etcd is gone for 10 s; reads go on
        assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=5).etag == etag
        assert health(a, "") == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)
    # Resolutions are answered from memory too: their records go to this replica's own log.
    resolved = stub.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=5)
    assert resolved.etag == etag and resolved.credentials.password == BASIC_V2["RelayPassword"]["SecretValue"]
    for member in cluster.members:
        cluster.start_member(member, wait=False)
    cluster.wait_healthy()
    wait_until(lambda: health(a, STORE) == health_pb2.HealthCheckResponse.SERVING, timeout=15)
    renamed = rename(stub, "after etcd came back")
    assert renamed.etag != etag and sender_name(stub) == "after etcd came back"
    again = stub.WatchSmtp(v2.WatchSmtpRequest(), timeout=30)
    first = next(again)
    assert first.kind == v2.WatchSmtpEvent.KIND_SNAPSHOT and first.etag == renamed.etag
    again.cancel()


def test_leader_killed_during_writes_through_two_replicas_loses_no_acknowledged_write(
    own_replicas: Replicas, tmp_path: Path
) -> None:
    """Replica A rewrites the profile, each time on the etag of its own last write (no one else
    writes it, so an ABORTED would be a false conflict); replica B renames a provider instance.
    The etcd leader is killed with -9 in the middle and restarted."""
    cluster = own_replicas.cluster
    a = own_replicas.start(file_directories=(tmp_path,))
    b = own_replicas.start(file_directories=(tmp_path,))
    etag = update(config(a), BASIC_V2).etag
    providers_b = providers_grpc.SecretProviderServiceStub(b.channel())
    instance = providers_pb.ProviderInstance(name="B-start", provider_type="file")
    instance.initialization["Directory"].value = str(tmp_path)
    provider_id = providers_b.CreateProvider(providers_pb.CreateProviderRequest(provider=instance), timeout=15).provider.id
    watched: list[Change | Resync] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_store, args=(cluster, own_replicas.prefix, watched, stop), daemon=True)
    watcher.start()
    acked: list[tuple[float, str]] = []  # (when, etag) of profile writes through A
    renamed: list[tuple[float, str]] = []  # (when, name) of instance renames through B
    refused: list[tuple[grpc.StatusCode, str]] = []

    def write_profile() -> None:
        stub, current = config(a), etag
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                current = update(stub, edit(BASIC_V2, SenderName=f"A-{i}"), etag=current, timeout=10).etag
                acked.append((time.monotonic(), current))
            except grpc.RpcError as error:
                refused.append((error.code(), error.details() or ""))
                if error.code() == grpc.StatusCode.ABORTED:
                    return
                time.sleep(0.05)
                current = _etag_or_none(stub) or current  # outcome unknown: read it again, as a client must

    def rename_instance() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            change = providers_pb.UpdateProviderRequest(provider=providers_pb.ProviderInstance(id=provider_id, name=f"B-{i}"))
            change.update_mask.paths.append("Name")
            try:
                providers_b.UpdateProvider(change, timeout=10)
                renamed.append((time.monotonic(), f"B-{i}"))
            except grpc.RpcError as error:
                refused.append((error.code(), error.details() or ""))
                time.sleep(0.05)

    writers = [threading.Thread(target=write_profile), threading.Thread(target=rename_instance)]
    for t in writers:
        t.start()
    time.sleep(1.0)
    leader = cluster.leader()
    killed_at = time.monotonic()
    cluster.kill9(leader)
    time.sleep(4.0)
    cluster.start_member(leader, wait=False)
    time.sleep(2.0)
    stop.set()
    for t in writers:
        t.join(30)
    assert not [r for r in refused if r[0] == grpc.StatusCode.ABORTED], f"a write was reported as a conflict: {refused}"
    for done in (acked, renamed):
        after = [when for when, _ in done if when > killed_at]
        assert after and after[0] - killed_at < 5, "writes did not resume within 5 s of the leader's death"
    # Every acknowledged profile write is in etcd's history, and the watch saw each once, in order.
    deadline = time.monotonic() + 10
    while not {e for _, e in acked} <= _etags(watched) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {e for _, e in acked} - _etags(watched), "an acknowledged write is not in etcd's history"
    revisions = [c.revision.revision for c in watched if isinstance(c, Change) and c.revision]
    assert revisions == sorted(set(revisions)), "the watch delivered a change twice or out of order"
    # The last acknowledged writes are what both replicas serve.
    wait_until(lambda: _etag_or_none(config(b)) == acked[-1][1] == _etag_or_none(config(a)), timeout=5)
    providers_a = providers_grpc.SecretProviderServiceStub(a.channel())
    listed = providers_a.ListProviders(providers_pb.ListProvidersRequest(), timeout=5).providers
    assert [p.name for p in listed if p.id == provider_id] == [renamed[-1][1]]


def _etags(watched: list[Change | Resync]) -> set[str]:
    return {c.revision.etag for c in list(watched) if isinstance(c, Change) and c.revision}


def _watch_store(cluster: EtcdCluster, prefix: str, into: list, stop: threading.Event) -> None:
    async def main() -> None:
        store = EtcdStore(EtcdOptions(endpoints=tuple(cluster.endpoints.split(",")), prefix=prefix))
        async def follow() -> None:
            async for change in store.watch(PROFILE_KEY, after=0):
                into.append(change)

        task = asyncio.create_task(follow())
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # the last acknowledged writes arrive
        task.cancel()
        await store.close()

    asyncio.run(main())


def _request_senders() -> list[asyncio.Task]:
    """The tasks grpc runs to send a stream's requests (one per open watch stream)."""
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("_consume_request_iterator")]


def test_the_watch_of_a_killed_member_resumes_elsewhere_without_loss(own_etcd_cluster: EtcdCluster) -> None:
    """The member a watch reads from is killed while the watch is still catching up on a long
    history (etcd then sends batches whose header is ahead of their events: resuming from a header
    would skip events) and while writes go on: every revision arrives once, in order."""
    cluster = own_etcd_cluster
    prefix = new_prefix()

    async def main() -> None:
        first = cluster.members[0]
        # The watching store talks to the first member until it fails; the writer to the others.
        watching = EtcdStore(EtcdOptions(endpoints=tuple(cluster.endpoints.split(",")), prefix=prefix))
        writing = EtcdStore(EtcdOptions(endpoints=tuple(m.endpoint for m in cluster.members[1:]), prefix=prefix))
        start = await writing.revision()
        written: list[int] = []
        for chunk in range(15):  # a history of 1,500 changes to catch up on
            batch = range(chunk * 100, chunk * 100 + 100)
            done = await asyncio.gather(*(writing.put(f"k/{i % 7}", str(i).encode()) for i in batch))
            written += [r.revision for r in done]
        seen: list[Change | Resync] = []

        async def follow() -> None:
            async for change in watching.watch("k/", after=start):
                seen.append(change)

        task = asyncio.create_task(follow())
        while not seen:
            await asyncio.sleep(0.001)
        cluster.kill9(first)  # in the middle of the catch-up
        caught_up_at_kill = len(seen)
        for i in range(200):
            written.append((await writing.put(f"k/{i % 7}", str(i).encode())).revision)
        deadline = time.monotonic() + 20
        while len(seen) < len(written) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The stream the killed member ended leaves nothing behind: only the live watch's
        # request side runs (grpc does not end it for a call that ended on its own).
        senders_while_watching = len(_request_senders())
        task.cancel()
        await watching.close()
        await writing.close()
        settle = time.monotonic() + 5  # the cancelled sender ends on a later turn of the loop
        while _request_senders() and time.monotonic() < settle:
            await asyncio.sleep(0.01)
        assert (senders_while_watching, len(_request_senders())) == (1, 0)
        assert caught_up_at_kill < 1500, "the watch had caught up before the kill; the test proves less"
        assert not any(isinstance(c, Resync) for c in seen)
        assert [c.revision.revision for c in seen if isinstance(c, Change) and c.revision] == sorted(written)

    asyncio.run(main())


def test_a_frozen_member_is_left_by_the_watch(own_etcd_cluster: EtcdCluster) -> None:
    """A member that stops answering without closing its connections (SIGSTOP, as a hung host):
    the channel's keepalive notices, and the watch moves to another member without loss."""
    cluster = own_etcd_cluster
    prefix = new_prefix()

    async def main() -> None:
        first = cluster.members[0]
        watching = EtcdStore(EtcdOptions(endpoints=tuple(cluster.endpoints.split(",")), prefix=prefix))
        writing = EtcdStore(EtcdOptions(endpoints=tuple(m.endpoint for m in cluster.members[1:]), prefix=prefix))
        seen: list[Change | Resync] = []

        async def follow() -> None:
            async for change in watching.watch("k/", after=await watching.revision()):
                seen.append(change)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        written = [(await writing.put("k/a", b"before")).revision]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            for i in range(20):
                written.append((await writing.put("k/a", str(i).encode())).revision)
            while len(seen) < len(written) and time.monotonic() - frozen_at < 20:
                await asyncio.sleep(0.05)
            took = time.monotonic() - frozen_at
        finally:
            first.proc.send_signal(signal.SIGCONT)
        task.cancel()
        await watching.close()
        await writing.close()
        assert [c.revision.revision for c in seen if isinstance(c, Change) and c.revision] == written
        assert took < 12, f"the watch took {took:.1f} s to leave the frozen member"

    asyncio.run(main())


def test_compaction_while_a_replicas_watch_is_down_resyncs_it(own_replicas: Replicas) -> None:
    cluster = own_replicas.cluster
    only, *others = cluster.members
    a = own_replicas.start()
    b = own_replicas.start(etcd_endpoints=(only.endpoint,))  # B reaches etcd through one member
    update(config(a), BASIC_V2)
    wait_until(lambda: _etag_or_none(config(b)) is not None, timeout=5)
    cluster.kill9(only)  # B's watch is down
    for i in range(5):
        rename(config(a), f"while B was away {i}")
    cluster.compact()
    cluster.start_member(only)
    wait_until(lambda: sender_name(config(b)) == "while B was away 4", timeout=15)


def test_a_replica_killed_right_after_an_acknowledged_write_keeps_it(replicas: Replicas) -> None:
    cluster = replicas.cluster
    data_dir = short_dir("proc")
    replicas.dirs.append(data_dir)
    env = {
        "SMTPCONFIG_STORE": "etcd", "SMTPCONFIG_ETCD_ENDPOINTS": cluster.endpoints,
        "SMTPCONFIG_ETCD_PREFIX": replicas.prefix, "SMTPCONFIG_KEY_FILE": str(replicas.key_file),
    }
    process = ServerProcess(data_dir, env=env).start()
    try:
        with process.channel() as channel:
            etag = v2_grpc.ConfigServiceStub(channel).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=15
            ).etag
        process.kill9()
    finally:
        process.terminate()
    other = replicas.start()
    assert config(other).GetSmtp(v2.GetSmtpRequest(), timeout=5).etag == etag
