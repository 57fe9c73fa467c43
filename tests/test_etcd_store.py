"""The etcd store against a real 3-member etcd: compare-and-set, change records in the same
transaction, watch (resume, compaction → Resync), history, the key claim, unreachable store."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtpconfig.core.aio import stop_task
from smtpconfig.core.errors import FailedPrecondition, Unavailable
from smtpconfig.store.base import ABSENT, Change, EtagMismatch, Resync
from smtpconfig.store.etcd import EtcdOptions, EtcdStore
from tests.kits.etcd import EtcdCluster, new_prefix


def _options(cluster: EtcdCluster, prefix: str, **more) -> EtcdOptions:
    return EtcdOptions(endpoints=tuple(cluster.endpoints.split(",")), prefix=prefix, **more)


def run(coro):
    return asyncio.run(coro)


def test_cas_and_read_back(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        store = await EtcdStore.open(_options(etcd_cluster, new_prefix()))
        try:
            first = await store.put("profile", b"one", ABSENT, audit=(1_000, b"rec-1"))
            with pytest.raises(EtagMismatch):
                await store.put("profile", b"two", ABSENT)
            second = await store.put("profile", b"two", first.etag, audit=(2_000, b"rec-2"))
            assert second.revision > first.revision and second.etag != first.etag
            with pytest.raises(EtagMismatch):
                await store.put("profile", b"three", first.etag)
            got = await store.get("profile")
            assert got is not None and got.value == b"two" and got.etag == second.etag
            assert abs(got.updated_at.timestamp() - second.updated_at.timestamp()) < 0.001
            assert [(t, r) for _, t, r in await store.read_audit(0, None, 10)] == [(1_000, b"rec-1"), (2_000, b"rec-2")]
            seq = (await store.read_audit(0, None, 10))[0][0]
            assert [r for _, _, r in await store.read_audit(seq, None, 10)] == [b"rec-2"]
            await store.put("providers/2", b"b")
            await store.put("providers/1", b"a")
            assert [r.key for r in await store.list("providers/")] == ["providers/1", "providers/2"]
            with pytest.raises(EtagMismatch):
                await store.delete("providers/1", second.etag)
            assert await store.delete("providers/1", audit=(3_000, b"rec-3"))
            assert not await store.delete("providers/1")
            assert await store.get("providers/1") is None
            assert await store.prune_audit(2_500) == 2
            assert [r for _, _, r in await store.read_audit(0, None, 10)] == [b"rec-3"]
            assert await store.revision() >= second.revision
        finally:
            await store.close()

    run(main())


def test_watch_history_and_resume(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        store = await EtcdStore.open(_options(etcd_cluster, new_prefix()))
        try:
            start = await store.revision()
            first = await store.put("profile", b"1")
            await store.put("other", b"x")
            second = await store.put("profile", b"2")
            history = await store.history("profile", start)
            assert history is not None
            assert [c.revision.value for c in history if c.revision] == [b"1", b"2"]
            assert await store.history("profile", second.revision) == []
            assert [c.revision.value for c in await store.history("profile", first.revision) or [] if c.revision] == [b"2"]

            seen: list[Change | Resync] = []

            async def follow() -> None:
                async for change in store.watch("profile", after=start):
                    seen.append(change)

            task = asyncio.create_task(follow())
            await _until(lambda: len(seen) >= 2)
            await store.put("profile", b"3")
            await store.delete("profile")
            await _until(lambda: len(seen) >= 4)
            await stop_task(task)
            values = [c.revision.value if isinstance(c, Change) and c.revision else None for c in seen]
            assert values == [b"1", b"2", b"3", None]
            revisions = [c.revision.revision for c in seen if isinstance(c, Change) and c.revision]
            assert revisions == sorted(revisions)
        finally:
            await store.close()

    run(main())


def test_compaction_gives_resync_and_no_history(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        store = await EtcdStore.open(_options(etcd_cluster, new_prefix()))
        try:
            before = await store.revision()
            await store.put("profile", b"1")
            await store.put("profile", b"2")
            etcd_cluster.compact(await store.revision())
            assert await store.history("profile", before) is None
            seen: list[Change | Resync] = []

            async def follow() -> None:
                async for change in store.watch("profile", after=before):
                    seen.append(change)

            task = asyncio.create_task(follow())
            await _until(lambda: len(seen) >= 1)
            assert isinstance(seen[0], Resync) and seen[0].revision >= before + 2
            await store.put("profile", b"3")  # the watch goes on after the resync
            await _until(lambda: len(seen) >= 2)
            await stop_task(task)
            assert isinstance(seen[1], Change) and seen[1].revision and seen[1].revision.value == b"3"
        finally:
            await store.close()

    run(main())


def test_key_claim_names_the_key_the_data_needs(etcd_cluster: EtcdCluster) -> None:
    async def main() -> None:
        prefix = new_prefix()
        store = await EtcdStore.open(_options(etcd_cluster, prefix))
        try:
            await store.claim_key("aaaaaaaaaaaa")
            await store.claim_key("aaaaaaaaaaaa")
            with pytest.raises(FailedPrecondition, match="key id aaaaaaaaaaaa") as refused:
                await store.claim_key("bbbbbbbbbbbb")
            assert "bbbbbbbbbbbb" in str(refused.value)
        finally:
            await store.close()

    run(main())


def test_unreachable_store_is_unavailable_naming_it() -> None:
    async def main() -> None:
        store = EtcdStore(EtcdOptions(endpoints=("127.0.0.1:1",), prefix="/x/", timeout=0.3))
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"the store \(etcd at 127.0.0.1:1\) cannot be reached"):
            await store.put("profile", b"v", ABSENT)
        assert time.monotonic() - started < 5  # attempts are bounded, each with its own deadline
        with pytest.raises(Unavailable, match="etcd at 127.0.0.1:1"):
            await store.get("profile")
        await store.close()

    run(main())


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def tls_etcd(tmp_path_factory: pytest.TempPathFactory):
    """One member that takes TLS clients with certificates of the test CA only, auth enabled: user
    `smtpconfig` may read and write under /app/ and nothing else."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), size=1, tls=True)
    try:
        cluster.start()
        for step in (
            ("user", "add", "root", "--new-user-password", "root-pw"),
            ("user", "add", "smtpconfig", "--new-user-password", "app-pw"),
            ("role", "add", "app"),
            ("role", "grant-permission", "app", "readwrite", "/app/", "--prefix=true"),
            ("user", "grant-role", "smtpconfig", "app"),
            ("auth", "enable"),
        ):
            cluster.etcdctl(*step)
        yield cluster
    finally:
        cluster.remove()


def test_tls_client_certificate_and_user_from_a_password_file(tls_etcd: EtcdCluster, tmp_path) -> None:
    client = tls_etcd.ca.issue_client("app-client", cn="app-client")
    password = tmp_path / "password"
    password.write_text("app-pw\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it\n")

    def options(prefix: str, password_file=password, **more) -> EtcdOptions:
        return EtcdOptions(
            endpoints=(tls_etcd.members[0].endpoint,), prefix=prefix, ca_file=tls_etcd.ca.path,
            cert_file=client.cert, key_file=client.key, user="smtpconfig", password_file=password_file, **more,
        )

    async def main() -> None:
        store = await EtcdStore.open(options("/app/"))
        try:
            first = await store.put("profile", b"sealed", ABSENT, audit=(1, b"rec"))
            seen: list[Change | Resync] = []

            async def follow() -> None:
                async for change in store.watch("profile", after=first.revision - 1):
                    seen.append(change)

            task = asyncio.create_task(follow())
            await _until(lambda: len(seen) == 1)
            await stop_task(task)
            got = await store.get("profile")
            assert got is not None and got.etag == first.etag
        finally:
            await store.close()
        with pytest.raises(FailedPrecondition, match="refused this server.*check etcd_user"):
            await EtcdStore.open(options("/app/", password_file=wrong))
        with pytest.raises(FailedPrecondition, match="PERMISSION_DENIED"):  # a prefix its role does not grant
            await EtcdStore.open(options("/elsewhere/"))
        plain = EtcdStore(EtcdOptions(endpoints=(tls_etcd.members[0].endpoint,), prefix="/app/", timeout=0.5))
        with pytest.raises(Unavailable, match="cannot be reached"):
            await plain.get("profile")  # no TLS: the member does not answer
        await plain.close()

    run(main())
