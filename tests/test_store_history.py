"""The SQLite store's history for watchers that resume: `revision`, `history`, `watch(after=)`,
`Resync` when the history no longer reaches back, and the key claim."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.store.base import Change, Resync
from smtpconfig.store.sqlite import SqliteStore


def run(coro):
    return asyncio.run(coro)


def test_revision_follows_every_write_and_survives_reopen(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            assert await store.revision() == 0
            written = await store.put("a", b"1")
            assert await store.revision() == written.revision
            await store.delete("a")
            assert await store.revision() == written.revision + 1
        finally:
            await store.close()
        store = await SqliteStore.open(tmp_path)
        try:
            assert await store.revision() == written.revision + 1
        finally:
            await store.close()

    run(scenario())


def test_history_of_a_key_is_every_change_after_a_revision(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            first = await store.put("k", b"1")
            await store.put("other", b"x")  # another key's change is not in k's history
            second = await store.put("k", b"2")
            await store.delete("k")
            history = await store.history("k", first.revision - 1)
            assert history is not None
            assert [c.revision.value if c.revision else None for c in history] == [b"1", b"2", None]
            assert [c.at for c in history] == [first.revision, second.revision, second.revision + 1]
            assert history[1].revision == second  # etag and time as written
            assert await store.history("k", second.revision + 1) == []
        finally:
            await store.close()

    run(scenario())


def test_history_pruned_or_from_elsewhere_is_none(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path, history_keep=3)
        try:
            writes = [await store.put("k", str(i).encode()) for i in range(6)]
            # Revisions 4..6 are kept: resuming after 3 or later is complete, after 2 is not.
            kept = await store.history("k", writes[2].revision)
            assert kept is not None and [c.at for c in kept] == [w.revision for w in writes[3:]]
            assert await store.history("k", writes[1].revision) is None
            # A revision this store never had (another store's, a restored backup's).
            assert await store.history("k", writes[-1].revision + 1) is None
        finally:
            await store.close()

    run(scenario())


def test_watch_after_replays_then_follows_without_gap_or_duplicate(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            before = await store.put("p/a", b"1")
            missed = [await store.put("p/a", b"2"), await store.put("q/x", b"elsewhere"), await store.put("p/b", b"3")]
            changes = store.watch("p/", after=before.revision)
            seen = [await anext(changes), await anext(changes)]
            later = await store.put("p/a", b"4")
            seen.append(await anext(changes))
            await changes.aclose()
            assert all(isinstance(c, Change) for c in seen)
            assert [c.at for c in seen] == [missed[0].revision, missed[2].revision, later.revision]
        finally:
            await store.close()

    run(scenario())


def test_watch_after_a_pruned_revision_resyncs(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path, history_keep=2)
        try:
            writes = [await store.put("p/a", str(i).encode()) for i in range(5)]
            changes = store.watch("p/", after=writes[0].revision)
            first = await anext(changes)
            assert first == Resync(writes[-1].revision)
            later = await store.put("p/a", b"after")
            following = await anext(changes)
            assert isinstance(following, Change) and following.at == later.revision
            await changes.aclose()
        finally:
            await store.close()

    run(scenario())


def test_a_database_without_history_starts_it_at_its_revision(tmp_path: Path) -> None:
    """A database made before history was kept (its tables as that version made them): resuming
    from before its revision then is a resync, from then on the history is complete."""
    db = sqlite3.connect(tmp_path / "smtpconfig.db")
    db.executescript(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL,"
        " etag TEXT NOT NULL, updated_at TEXT NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('revision', 7);"
        "INSERT INTO kv VALUES ('k', x'31', 7, '7-old', '2026-01-01T00:00:00+00:00');"
    )
    db.close()

    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            assert await store.history("k", 6) is None
            assert await store.history("k", 7) == []
            later = await store.put("k", b"2")
            history = await store.history("k", 7)
            assert history is not None and [c.at for c in history] == [later.revision] == [8]
        finally:
            await store.close()

    run(scenario())


def test_claim_key_names_the_key_the_data_needs(tmp_path: Path) -> None:
    async def scenario():
        store = await SqliteStore.open(tmp_path)
        try:
            await store.claim_key("0123456789ab")
            await store.claim_key("0123456789ab")  # the same key again: nothing to say
            with pytest.raises(FailedPrecondition, match="encrypted with key 0123456789ab, but the configured key is ffff"):
                await store.claim_key("ffff")
        finally:
            await store.close()

    run(scenario())
