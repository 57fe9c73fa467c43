"""The SQLite store against its interface: revisions, etags, compare-and-set, watch, locking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.store.base import ABSENT, EtagMismatch
from smtpconfig.store.sqlite import SqliteStore


def run(coro):
    return asyncio.run(coro)


def test_put_get_revisions_and_etags(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            assert await store.get("a") is None
            first = await store.put("a", b"one")
            second = await store.put("a", b"one")  # same bytes, new revision, new etag
            other = await store.put("b", b"two")
            assert first.revision < second.revision < other.revision
            assert first.etag != second.etag
            assert (await store.get("a")) == second
            assert [r.key for r in await store.list("")] == ["a", "b"]
            assert [r.key for r in await store.list("b")] == ["b"]
        finally:
            await store.close()

    run(scenario())


def test_compare_and_set(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            created = await store.put("k", b"v1", ABSENT)
            with pytest.raises(EtagMismatch):
                await store.put("k", b"v2", ABSENT)
            with pytest.raises(EtagMismatch):
                await store.put("k", b"v2", "not-the-etag")
            with pytest.raises(EtagMismatch):
                await store.put("missing", b"v", created.etag)
            # Many writers racing on one etag: exactly one wins, the rest change nothing.
            outcomes = await asyncio.gather(
                *(store.put("k", f"w{i}".encode(), created.etag) for i in range(20)), return_exceptions=True
            )
            winners = [o for o in outcomes if not isinstance(o, Exception)]
            assert len(winners) == 1
            assert all(isinstance(o, EtagMismatch) for o in outcomes if o not in winners)
            assert (await store.get("k")).value == winners[0].value
        finally:
            await store.close()

    run(scenario())


def test_delete(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            written = await store.put("k", b"v")
            with pytest.raises(EtagMismatch):
                await store.delete("k", "stale")
            assert await store.delete("k", written.etag) is True
            assert await store.delete("k") is False
            assert await store.get("k") is None
        finally:
            await store.close()

    run(scenario())


def test_watch_sees_changes_under_its_prefix(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        seen = []

        async def follow():
            async for change in store.watch("smtp/"):
                seen.append((change.key, change.revision.value if change.revision else None))
                if len(seen) == 3:
                    return

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0)
        try:
            await store.put("smtp/a", b"1")
            await store.put("other", b"x")
            await store.put("smtp/a", b"2")
            await store.delete("smtp/a")
            await asyncio.wait_for(follower, 5)
            assert seen == [("smtp/a", b"1"), ("smtp/a", b"2"), ("smtp/a", None)]
        finally:
            await store.close()

    run(scenario())


def test_data_survives_reopen_and_revisions_keep_increasing(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        written = await store.put("k", b"v")
        await store.close()
        store = await SqliteStore.open(tmp_path)
        try:
            assert await store.get("k") == written
            assert (await store.put("k", b"w")).revision > written.revision
        finally:
            await store.close()

    run(scenario())


def test_one_store_per_data_directory(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            with pytest.raises(FailedPrecondition, match="in use"):
                await SqliteStore.open(tmp_path)
        finally:
            await store.close()
        again = await SqliteStore.open(tmp_path)  # free again once closed
        await again.close()

    run(scenario())
