"""Edge mode with real servers: an edge (`upstream` set) following a central smtpconfig over gRPC.

The central resolves a password from a `file` provider (5 s TTL, so its `cache_for` is short enough
to outlive in a test). Checked: a central change reaches a WatchSmtp client of the edge; ResolveSmtp
through the edge equals the central's and 100 concurrent callers make one upstream call; with the
central stopped, reads and cached resolutions go on until `cache_for` ends, then UNAVAILABLE, and
the edge recovers without a restart; the central's audit names the edge (and the local caller only
when the edge is trusted); writes are refused; the edge's upstream token shows nowhere."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from smtpconfig.api.auth import token_hash
from smtpconfig.edge.upstream import Resolved
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as providers_grpc
from tests.kits.calls import list_records
from tests.kits.edge import (
    ADMIN_TOKEN,
    APP_TOKEN,
    EDGE_PERMISSIONS,
    EDGE_TOKEN,
    FILES,
    PASSWORD,
    PROFILE,
    UNTRUSTED_TOKEN,
    Event,
)
from tests.kits.edge import auth as _auth
from tests.kits.edge import until as _until
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerThread, short_dir
from tests.kits.support import free_port as _free_port


class Central:
    """The central server, on a fixed port so that it can be stopped and started again."""

    def __init__(self, base: Path) -> None:
        files = base / "files"
        files.mkdir()
        (files / "smtp-password").write_text(PASSWORD + "\n")
        self.data_dir = base / "central"
        self.settings = dict(
            listen=(f"127.0.0.1:{_free_port()}",),
            tokens=(("admin-c", token_hash(ADMIN_TOKEN)), ("edge-a", token_hash(EDGE_TOKEN)),
                    ("edge-b", token_hash(UNTRUSTED_TOKEN))),
            policy=(("admin-c", ("*",)), ("edge-a", EDGE_PERMISSIONS), ("edge-b", EDGE_PERMISSIONS)),
            edge_identities=("edge-a",),
            providers=({"id": FILES, "name": "files", "type": "file", "initialization": {"Directory": str(files)}},),
            watch_progress_seconds=0.5,
        )
        self.server: ServerThread | None = None

    def start(self) -> Central:
        self.server = ServerThread(self.data_dir, **self.settings).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.stop()
        self.server = None

    @property
    def address(self) -> str:
        return self.settings["listen"][0]

    def stub(self) -> v2_grpc.ConfigServiceStub:
        return v2_grpc.ConfigServiceStub(grpc.insecure_channel(self.address))

    def records(self, method: str) -> list:
        with grpc.insecure_channel(self.address) as channel:
            return [r for r in list_records(channel, ADMIN_TOKEN) if r.method == method]


@pytest.fixture
def world() -> Iterator[tuple[Central, ServerThread, Path]]:
    base = short_dir("edge")
    central = Central(base).start()
    central.stub().UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(PROFILE)), metadata=_auth(ADMIN_TOKEN), timeout=10)
    (base / "edge.token").write_text(EDGE_TOKEN + "\n")
    edge = ServerThread(
        base / "edge", upstream=(central.address,), upstream_token_file=base / "edge.token",
        tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
        max_concurrent_rpcs_per_identity=0,
    ).start()
    try:
        yield central, edge, base
    finally:
        edge.stop()
        if central.server is not None:
            central.stop()
        shutil.rmtree(base, ignore_errors=True)


def _edge(edge: ServerThread) -> v2_grpc.ConfigServiceStub:
    return v2_grpc.ConfigServiceStub(grpc.insecure_channel(edge.target))


def _get(edge: ServerThread):
    return _edge(edge).GetSmtp.with_call(v2.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)


def _resolve(edge: ServerThread) -> v2.ResolveSmtpResponse:
    return _edge(edge).ResolveSmtp(v2.ResolveSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)


def test_follows_and_resolves_like_the_central(world) -> None:
    central, edge, _ = world
    got, _ = _until(lambda: _get(edge))
    direct = central.stub().GetSmtp(v2.GetSmtpRequest(), metadata=_auth(ADMIN_TOKEN), timeout=5)
    assert got.profile == direct.profile and got.etag == direct.etag
    # A central change reaches a WatchSmtp client of the edge.
    stream = _edge(edge).WatchSmtp(v2.WatchSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=30)
    first = next(stream)
    assert first.kind == Event.KIND_SNAPSHOT and first.profile.host == "smtp.example.com"
    central.stub().UpdateSmtp(
        v2.UpdateSmtpRequest(profile=v2_profile(edit(PROFILE, Host="relay2.example.com"))),
        metadata=_auth(ADMIN_TOKEN), timeout=10,
    )
    change = next(e for e in stream if e.kind != Event.KIND_PROGRESS)
    assert change.kind == Event.KIND_CHANGE and change.profile.host == "relay2.example.com"
    stream.cancel()
    resolved = _resolve(edge)
    direct_resolved = central.stub().ResolveSmtp(v2.ResolveSmtpRequest(), metadata=_auth(ADMIN_TOKEN), timeout=5)
    assert resolved.credentials.password == direct_resolved.credentials.password == PASSWORD
    assert resolved.profile == direct_resolved.profile and resolved.etag == direct_resolved.etag


def test_concurrent_callers_share_one_upstream_call_and_the_audit_names_both(world) -> None:
    central, edge, _ = world
    _until(lambda: _get(edge))
    stub = _edge(edge)
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(
            lambda _: stub.ResolveSmtp(v2.ResolveSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=10), range(100)
        ))
    assert {a.credentials.password for a in answers} == {PASSWORD}
    records = central.records("v2.ConfigService/ResolveSmtp")
    assert [r.identity for r in records] == ["edge-a for billing-app"]


def test_the_edges_own_records_name_what_each_answer_revealed_and_never_a_value(world) -> None:
    central, edge, _ = world
    _until(lambda: _get(edge))
    first, second = _resolve(edge), _resolve(edge)  # the second from the edge's kept answer
    assert first.credentials.password == second.credentials.password == PASSWORD
    with grpc.insecure_channel(edge.target) as channel:
        records = [r for r in list_records(channel, APP_TOKEN) if r.method == "v2.ConfigService/ResolveSmtp"]
    assert len(records) == 2
    for record in records:
        assert (record.identity, record.outcome) == ("billing-app", "OK")
        assert list(record.fields) == ["RelayUsername", "RelayPassword"]
        assert record.message == f"profile etag {first.etag} from {central.address}"
        assert PASSWORD not in str(record) and first.credentials.username not in str(record)


@pytest.mark.parametrize(("credentials", "revealed"), [
    (v2.ResolvedCredentials(username="app", password="pw-8e1f"), ("RelayUsername", "RelayPassword")),
    (v2.ResolvedCredentials(access_token="tok-4b7c", token_type="Bearer"), ("AccessToken",)),
    (v2.ResolvedCredentials(), ()),  # Anonymous
])
def test_a_kept_upstream_answer_knows_what_it_reveals_and_leaves_out_its_cache_for(credentials, revealed) -> None:
    answer = v2.ResolveSmtpResponse(credentials=credentials, etag='"rev-7"')
    answer.cache_for.FromSeconds(300)
    kept = Resolved.of(answer, expires=123.0)
    assert (kept.etag, kept.revealed, kept.expires) == ('"rev-7"', revealed, 123.0)
    without = v2.ResolveSmtpResponse.FromString(kept.wire)
    assert not without.HasField("cache_for") and without.credentials == credentials and without.etag == '"rev-7"'


def test_an_untrusted_edge_is_named_alone(world) -> None:
    central, _, base = world
    (base / "b.token").write_text(UNTRUSTED_TOKEN)
    edge_b = ServerThread(
        base / "edge-b", upstream=(central.address,), upstream_token_file=base / "b.token",
        tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
    ).start()
    try:
        _until(lambda: _get(edge_b))
        assert _resolve(edge_b).credentials.password == PASSWORD
    finally:
        edge_b.stop()
    assert [r.identity for r in central.records("v2.ConfigService/ResolveSmtp")] == ["edge-b"]


def test_outage_serves_the_last_profile_and_cached_credentials_then_recovers(world) -> None:
    central, edge, _ = world
    _until(lambda: _get(edge))
    resolved = _resolve(edge)
    cache_for = resolved.cache_for.ToTimedelta().total_seconds()
    assert 0 < cache_for <= 5
    resolved_at = time.monotonic()
    central.stop()
    time.sleep(1.5)
    got, call = _get(edge)
    assert got.profile.host == "smtp.example.com"
    age = dict(call.trailing_metadata())["smtpconfig-profile-age-seconds"]
    assert int(age) >= 1
    if time.monotonic() - resolved_at < cache_for - 0.5:
        assert _resolve(edge).credentials.password == PASSWORD
    time.sleep(max(0.0, resolved_at + cache_for + 0.2 - time.monotonic()))
    with pytest.raises(grpc.RpcError) as raised:
        _resolve(edge)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert EDGE_TOKEN not in (raised.value.details() or "")
    central.start()
    assert _until(lambda: _resolve(edge)).credentials.password == PASSWORD
    _, call = _until(lambda: (r := _get(edge)) and dict(r[1].trailing_metadata())[
        "smtpconfig-profile-age-seconds"] == "0" and r)


def test_a_kept_answer_tells_callers_only_the_time_it_has_left(world) -> None:
    # The edge keeps the central's answer for the central's cache_for. A caller that gets it later
    # must be told what is left of that time, or it would keep the credentials past the secret's
    # cache time by up to another cache_for (a rotation reaching it that much later).
    central, edge, _ = world
    _until(lambda: _get(edge))
    first = _resolve(edge).cache_for.ToTimedelta().total_seconds()
    fetched = time.monotonic()
    time.sleep(1.2)
    kept = _resolve(edge)
    left = kept.cache_for.ToTimedelta().total_seconds()
    assert kept.credentials.password == PASSWORD
    assert len(central.records("v2.ConfigService/ResolveSmtp")) == 1  # the edge kept it: no second fetch
    assert 0 < left <= first - (time.monotonic() - fetched) + 0.05 < first - 1.0


def test_test_smtp_is_forwarded(world) -> None:
    central, edge, _ = world
    _until(lambda: _get(edge))
    # A candidate relay nobody listens on: the central runs the test and reports the failed connect.
    candidate = edit(BASIC_V2, Host="127.0.0.1", Port=_free_port(), UseSSL=False, RelayAuthenticationType=0,
                     RelayUsername=None, RelayPassword=None)
    candidate = {k: v for k, v in candidate.items() if v is not None}
    answer = _edge(edge).TestSmtp(
        v2.TestSmtpRequest(profile=v2_profile(candidate), test_recipient="ops@example.com"),
        metadata=_auth(APP_TOKEN), timeout=30,
    )
    assert not answer.success and answer.steps[-1].name == "connect"
    assert [r.identity for r in central.records("v2.ConfigService/TestSmtp")] == ["edge-a for billing-app"]


def test_an_unreachable_upstream_address_is_passed_over(world) -> None:
    central, _, base = world
    edge = ServerThread(
        base / "edge-2", upstream=(f"127.0.0.1:{_free_port()}", central.address),
        upstream_token_file=base / "edge.token",
        tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
    ).start()
    try:
        got, _ = _until(lambda: _get(edge))
        assert got.profile.host == "smtp.example.com"
        assert _resolve(edge).credentials.password == PASSWORD
    finally:
        edge.stop()


def test_writes_are_refused_and_the_token_never_shows(world) -> None:
    central, edge, _ = world
    _until(lambda: _get(edge))
    with pytest.raises(grpc.RpcError) as raised:
        _edge(edge).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(PROFILE)), metadata=_auth(APP_TOKEN), timeout=5)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == f"this server follows {central.address}; change the profile there"
    providers = providers_grpc.SecretProviderServiceStub(grpc.insecure_channel(edge.target))
    with pytest.raises(grpc.RpcError) as refused:
        providers.ListProviders(providers_pb.ListProvidersRequest(), metadata=_auth(APP_TOKEN), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with grpc.insecure_channel(edge.target) as channel:
        shown = str(list_records(channel, APP_TOKEN))
    got, call = _get(edge)
    for text in (shown, str(got), str(call.trailing_metadata()), raised.value.details(), refused.value.details()):
        assert EDGE_TOKEN not in text
    for path in Path(edge.data_dir).rglob("*"):
        if path.is_file() and path.name != "edge.token":
            assert EDGE_TOKEN.encode() not in path.read_bytes(), path
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_an_edge_refuses_declared_providers(tmp_path: Path) -> None:
    from smtpconfig.settings import Settings, SettingsError, check

    with pytest.raises(SettingsError, match="no provider instances"):
        check(Settings(data_dir=tmp_path, upstream=("127.0.0.1:1",),
                       providers=({"id": 3, "name": "f", "type": "file", "initialization": {}},)))


@pytest.mark.parametrize("upstream", ["smtpconfig.example:8443", "10.0.0.5:8443", "127.0.0.1:1,[2001:db8::1]:8443"])
def test_an_edge_never_sends_its_token_in_clear_off_this_machine(tmp_path: Path, upstream: str) -> None:
    from smtpconfig.settings import Settings, SettingsError, check

    token = tmp_path / "edge.token"
    with pytest.raises(SettingsError, match="would be sent in clear"):
        check(Settings(data_dir=tmp_path, upstream=tuple(upstream.split(",")), upstream_token_file=token))
    # With TLS to the upstream, or an upstream on loopback, it may.
    check(Settings(data_dir=tmp_path, upstream=tuple(upstream.split(",")), upstream_token_file=token,
                   upstream_ca_file=tmp_path / "ca.pem"))
    check(Settings(data_dir=tmp_path, upstream=("127.0.0.1:8443", "[::1]:8443"), upstream_token_file=token))


def test_a_refresh_passes_upstream_and_returns_a_rotated_password_at_once(world) -> None:
    central, edge, base = world
    _until(lambda: _get(edge))
    assert _resolve(edge).credentials.password == PASSWORD
    rotated = PASSWORD + "-rotated"
    (base / "files" / "smtp-password").write_text(rotated + "\n")
    assert _resolve(edge).credentials.password == PASSWORD  # cached here (and centrally) for cache_for
    fresh = _edge(edge).ResolveSmtp(v2.ResolveSmtpRequest(refresh=True), metadata=_auth(APP_TOKEN), timeout=5)
    assert fresh.credentials.password == rotated
    assert _resolve(edge).credentials.password == rotated  # and the fresh answer is what is cached now
    records = [r for r in central.records("v2.ConfigService/ResolveSmtp") if "refresh" in r.message]
    assert [r.identity for r in records] == ["edge-a for billing-app"]
    # One refresh per identity per interval, at the edge as centrally.
    with pytest.raises(grpc.RpcError) as limited:
        _edge(edge).ResolveSmtp(v2.ResolveSmtpRequest(refresh=True), metadata=_auth(APP_TOKEN), timeout=5)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_v1_reads_in_keyfactors_shape_follow_the_central_and_writes_are_refused(world) -> None:
    from smtpconfig.v1 import config_service_pb2 as v1
    from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc

    central, edge, _ = world
    _until(lambda: _get(edge))
    stub = v1_grpc.ConfigServiceStub(grpc.insecure_channel(edge.target))
    direct = v1_grpc.ConfigServiceStub(grpc.insecure_channel(central.address))
    got = stub.GetSmtp(v1.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5)
    assert got == direct.GetSmtp(v1.GetSmtpRequest(), metadata=_auth(ADMIN_TOKEN), timeout=5)
    assert PASSWORD not in str(got)
    # A central change shows in v1 too, once the edge follows it.
    central.stub().UpdateSmtp(
        v2.UpdateSmtpRequest(profile=v2_profile(edit(PROFILE, Host="relay3.example.com"))),
        metadata=_auth(ADMIN_TOKEN), timeout=10,
    )
    _until(lambda: _get(edge)[0].profile.host == "relay3.example.com" or None)
    assert stub.GetSmtp(v1.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5).profile.host == "relay3.example.com"
    # The central stopped: the last v1 copy is still served.
    central.stop()
    assert stub.GetSmtp(v1.GetSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=5).profile.host == "relay3.example.com"
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateSmtp(v1.UpdateSmtpRequest(profile=got.profile), metadata=_auth(APP_TOKEN), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_real_processes_an_edge_process_follows_a_central_process_and_outlives_it(tmp_path: Path) -> None:
    """`smtpconfig serve` twice: a central on loopback TCP and an edge on its Unix socket."""
    from tests.kits.support import ServerProcess

    base = short_dir("edgeproc")
    port = _free_port()
    central = ServerProcess(base / "central")
    central.args[central.args.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
    central.start()
    edge = None
    try:
        with central.channel() as channel:
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10)
            direct = v2_grpc.ConfigServiceStub(channel).ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)
        edge = ServerProcess(base / "edge", "--upstream", f"127.0.0.1:{port}",
                             env={"SMTPCONFIG_UPSTREAM_TOKEN_FILE": str(central.token_path)}).start()
        with edge.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            got = _until(lambda: stub.GetSmtp(v2.GetSmtpRequest(), timeout=5))
            assert got.etag == direct.etag and got.profile == direct.profile
            resolved = stub.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)
            assert resolved.credentials.password == direct.credentials.password
            central.kill9()
            assert stub.GetSmtp(v2.GetSmtpRequest(), timeout=5).etag == direct.etag  # the last followed profile
            assert stub.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=5).credentials == resolved.credentials
            with pytest.raises(grpc.RpcError) as refused:
                stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert central.token not in edge.log()
    finally:
        if edge is not None:
            edge.terminate()
        if central.proc is not None and central.proc.poll() is None:
            central.terminate()
        shutil.rmtree(base, ignore_errors=True)
def test_a_resuming_client_of_the_edge_gets_the_changes_it_missed(world) -> None:
    central, edge, base = world
    _until(lambda: _get(edge))
    stream = _edge(edge).WatchSmtp(v2.WatchSmtpRequest(), metadata=_auth(APP_TOKEN), timeout=30)
    snapshot = next(stream)
    stream.cancel()
    assert snapshot.kind == Event.KIND_SNAPSHOT
    for host in ("relay2.example.com", "relay3.example.com"):
        central.stub().UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(PROFILE, Host=host))),
                                  metadata=_auth(ADMIN_TOKEN), timeout=10)
    _until(lambda: _get(edge)[0].profile.host == "relay3.example.com")
    resumed = _edge(edge).WatchSmtp(v2.WatchSmtpRequest(after_revision=snapshot.revision),
                                    metadata=_auth(APP_TOKEN), timeout=30)
    missed = [next(resumed), next(resumed)]
    resumed.cancel()
    assert [e.kind for e in missed] == [Event.KIND_CHANGE, Event.KIND_CHANGE]
    assert [e.profile.host for e in missed] == ["relay2.example.com", "relay3.example.com"]
    assert snapshot.revision < missed[0].revision < missed[1].revision
    # An edge started after those changes keeps nothing older: a client resuming from before gets RESYNC.
    late = ServerThread(
        base / "edge-late", upstream=(central.address,), upstream_token_file=base / "edge.token",
        tokens=(("billing-app", token_hash(APP_TOKEN)),), policy=(("billing-app", ("*",)),),
    ).start()
    try:
        _until(lambda: _get(late))
        again = _edge(late).WatchSmtp(v2.WatchSmtpRequest(after_revision=snapshot.revision),
                                      metadata=_auth(APP_TOKEN), timeout=30)
        first = next(again)
        again.cancel()
        assert first.kind == Event.KIND_RESYNC and first.revision == missed[1].revision
        assert first.profile.host == "relay3.example.com"
    finally:
        late.stop()


def _followed_event(kind: int, revision: int, host: str = "smtp.example.com") -> v2.WatchSmtpEvent:
    if kind == Event.KIND_PROGRESS:
        return Event(kind=kind, revision=revision)  # type: ignore[arg-type]
    return Event(kind=kind, revision=revision, etag=f"e{revision}",  # type: ignore[arg-type]
                 profile=v2_profile(edit(PROFILE, Host=host)))


def test_followed_keeps_the_last_revisions_and_drops_them_on_an_upstream_resync() -> None:
    import asyncio

    from smtpconfig.edge.upstream import Followed

    followed = Followed(keep=3)
    resyncs: list[bool] = []
    followed.on_resync(lambda: resyncs.append(True))

    def after(revision: int) -> list[int] | None:
        kept = asyncio.run(followed.changes_after(revision))
        return None if kept is None else [k.revision for k in kept]

    assert after(1) is None  # nothing followed yet
    followed.take(_followed_event(Event.KIND_SNAPSHOT, 10))
    assert after(10) == [] and after(9) is None
    for revision in (12, 15, 20):
        followed.take(_followed_event(Event.KIND_CHANGE, revision))
    assert after(10) == [12, 15, 20]  # the snapshot went, and every change after it is kept
    followed.take(_followed_event(Event.KIND_CHANGE, 22))
    followed.take(_followed_event(Event.KIND_PROGRESS, 25))
    assert after(10) is None and after(11) is None  # 12 went: changes after it are all that is known
    assert after(12) == [15, 20, 22] and after(16) == [20, 22] and after(22) == [] and after(30) == []
    assert not resyncs
    followed.take(_followed_event(Event.KIND_RESYNC, 4, "relay9.example.com"))
    assert resyncs == [True]
    assert after(3) is None and after(4) == []  # (newer than 4 is no revision now: WatchSmtp resyncs it)
    assert followed.current is not None and followed.current.revision == 4
    followed.take(_followed_event(Event.KIND_CHANGE, 6))
    assert after(4) == [6]


def test_an_upstream_resync_ends_the_edges_open_streams_but_not_later_ones() -> None:
    import asyncio

    from smtpconfig.domain.watch import Ended, ProfileWatch
    from smtpconfig.edge.upstream import Followed

    async def run() -> None:
        followed = Followed()
        watch = ProfileWatch(followed, 60.0)
        followed.on_resync(lambda: watch.end_open("resynced"))
        followed.take(_followed_event(Event.KIND_SNAPSHOT, 10))
        with watch.open() as open_before:
            followed.take(_followed_event(Event.KIND_CHANGE, 11))
            assert (await open_before.next()).revision == 11  # a change does not end it
            followed.take(_followed_event(Event.KIND_RESYNC, 3, "relay9.example.com"))
            assert await open_before.next() == Ended("resynced")  # not revision 3 after 11
        with watch.open() as opened_after:
            followed.take(_followed_event(Event.KIND_CHANGE, 5))
            assert (await opened_after.next()).revision == 5
        await watch.stop("done")

    asyncio.run(run())
