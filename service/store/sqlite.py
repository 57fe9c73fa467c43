"""The embedded store: one SQLite file in the data directory.

Durability: WAL journal with ``synchronous=FULL``, so a commit is fsynced before `put` returns; an
acknowledged write survives kill -9 and power loss. All SQLite work runs on one dedicated thread:
writes are serialised there (compare-and-set is a plain transaction) and the event loop never
blocks on disk. One server owns a data directory at a time (an advisory lock on ``store.lock``).

Several processes (`workers` > 1): the supervisor holds the lock and hands it to its workers, each
with a store of its own on the same file. Writes from two processes are serialised by SQLite's
write lock (BEGIN IMMEDIATE, waiting up to the busy timeout), and revisions come from one counter
in the database, so they stay unique and increasing across processes. Each process learns of the
others' writes from the history table, in revision order:

- every write also sets the newest revision in a small memory-mapped file beside the database
  (``smtpconfig.db-revision``), before it commits and under the write lock;
- every `FOLLOW_SECONDS` the event loop compares that number with the newest revision it has
  published (a read of shared memory); when another process wrote, it reads the history rows it
  has not seen (a read on a connection of its own, well under a millisecond) and publishes them;
- `settle()` does the same at once: the profile service calls it before answering a read, so a
  change another worker has acknowledged is never answered as absent (read-your-writes across
  workers, for the profile);
- a process's own write first takes up what the others wrote before it, in its transaction, so
  its watchers still see every change in revision order; what two paths publish is published
  once. When the history was pruned past what a process had seen, its watchers get a `Resync`.

A full disk, an I/O error or a read-only file: the failing call is UNAVAILABLE naming that cause
(SQLite rolls such a transaction back by itself, so our own rollback must not replace the cause
with "no transaction is active"). The store then remembers that it could not write, and `ping`,
which otherwise only takes the write lock (that costs no disk space and would not notice a full
disk), also commits a small write until one succeeds: readiness follows the disk without writing
to it every few seconds while all is well.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` names a method inside the store classes
import contextlib
import logging
import mmap
import os
import sqlite3
import struct
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from smtpconfig.core.aio import stop_task
from smtpconfig.core.errors import FailedPrecondition, Unavailable
from smtpconfig.store import lock as store_lock
from smtpconfig.store.base import ABSENT, AuditEntry, Change, EtagMismatch, Resync, Revision, _Absent, make_etag

T = TypeVar("T")

log = logging.getLogger(__name__)

# How often a store shared with other processes looks for their writes (the shared revision): the
# most another worker's WatchSmtp stream lags behind a write, beyond the time to read it.
FOLLOW_SECONDS = 0.01
_REVISION_FILE_SUFFIX = "-revision"
_COUNTER = struct.Struct("<Q")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    revision   INTEGER NOT NULL,
    etag       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    time   INTEGER NOT NULL,  -- microseconds since the Unix epoch
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
-- Written only by `ping` after a write failed, to learn whether the disk takes writes again.
CREATE TABLE IF NOT EXISTS probe (data BLOB NOT NULL);
-- Every change, in the transaction that makes it, so that a watcher can resume after a revision
-- (WatchSmtp). `value` NULL is a deletion. Only the newest `history_keep` are kept.
CREATE TABLE IF NOT EXISTS history (
    revision   INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    value      BLOB,
    etag       TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_key ON history (key, revision);
-- History is complete above this revision: what was pruned, or written before history was kept
-- (a database made by an older version starts its history at its revision then).
INSERT OR IGNORE INTO meta (name, value) SELECT 'history_from', value FROM meta WHERE name = 'revision';
-- Text facts about the data: the id of the key its secrets are sealed with.
CREATE TABLE IF NOT EXISTS claims (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Changes kept for watchers that resume after a revision (setting `history_keep`).
HISTORY_KEEP = 1000

# Why SQLite could not do it, in words, by the first part of its (extended) result code name.
_CAUSES = {
    "SQLITE_FULL": "the database or its disk is full",
    "SQLITE_IOERR": "the disk reported an I/O error",
    "SQLITE_READONLY": "the database file cannot be written",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_BUSY": "another process holds the database's lock",
}
# Causes after which the store cannot write until something outside it changes.
_WRITE_FAILURES = frozenset({"SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN"})
# The write `ping` commits while writes fail: room for a change and its record, at least.
_PROBE_BYTES = 16 * 1024


def _cause(error: sqlite3.Error) -> tuple[str, str]:
    """(the result code's family, e.g. SQLITE_FULL; what went wrong, in words)."""
    name = getattr(error, "sqlite_errorname", "") or "SQLITE_ERROR"
    family = "_".join(name.split("_")[:2])
    return family, f"{_CAUSES.get(family, str(error))} ({name})"


def _rollback(db: sqlite3.Connection) -> None:
    """End a failed transaction. After some errors (a full disk among them) SQLite has already
    rolled it back; either way the error that failed it is the one to report, not the rollback's."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class SqliteStore:
    """`Store` on a SQLite file. Create with `await SqliteStore.open(data_dir)`."""

    def __init__(self, path: Path, lock_fd: int, history_keep: int = HISTORY_KEEP, *, shared: bool = False) -> None:
        self.path = path
        self._history_keep = max(1, history_keep)
        self._lock_fd = lock_fd
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._watchers: list[tuple[str, asyncio.Queue[Change | Resync]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Other processes write to the same file (the workers of one supervisor): follow them.
        self.shared = shared
        # When shared: the newest revision this process has taken up (its own writes and the
        # others' read from the history), and the others' changes read but not yet handed to the
        # event loop.
        self._synced = 0
        self._others: list[Change | Resync] = []
        self._follower: asyncio.Task | None = None
        # When shared: the newest revision any process has written (memory-mapped file), and a
        # connection of the event loop's own for taking up the others' changes (`settle`).
        self._counter: mmap.mmap | None = None
        self._reader: sqlite3.Connection | None = None
        # Store thread and event loop: `_synced` and `_others` change under it.
        self._sync_lock = threading.Lock()
        # Newest revision published to watchers: a resuming watcher takes rows up to it from the
        # history table and the rest from its queue.
        self._published = 0
        # Why the last write failed for a cause outside the store (disk full, I/O error), until a
        # probe write succeeds again; None while writes work.
        self._write_failure: str | None = None

    @classmethod
    async def open(
        cls, data_dir: Path, filename: str = "smtpconfig.db", history_keep: int = HISTORY_KEEP,
        *, lock_fd: int | None = None,
    ) -> SqliteStore:
        """Open the store, taking the data directory's lock; or, with `lock_fd` (a worker's, handed
        down by its supervisor), sharing it with the supervisor's other workers."""
        if lock_fd is None:
            fd = store_lock.take(data_dir)
        else:
            fd = store_lock.adopt(os.dup(lock_fd), data_dir)
        store = cls(data_dir / filename, fd, history_keep, shared=lock_fd is not None)
        store._loop = asyncio.get_running_loop()
        try:
            await store._run(store._connect)
        except BaseException:
            await store.close()
            raise
        if store.shared:
            store._follower = asyncio.create_task(store._follow_others(), name="sqlite-follower")
        return store

    def _connect(self) -> None:
        # Create the file owner-only before SQLite does, so its -wal and -shm files inherit 0600.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        if self.shared:
            (self._synced,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            self._published = self._synced
            counter = self.path.with_name(self.path.name + _REVISION_FILE_SUFFIX)
            fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _COUNTER.size:
                    os.ftruncate(fd, _COUNTER.size)
                self._counter = mmap.mmap(fd, _COUNTER.size)
            finally:
                os.close(fd)
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.OperationalError as error:
            # Locked by another process, disk full, I/O error: the store cannot be used right now.
            family, cause = _cause(error)
            if family in _WRITE_FAILURES:
                self._write_failure = cause
            raise Unavailable(f"the store cannot be used right now: {cause}; try again") from None

    @staticmethod
    def _row(row: tuple) -> Revision:
        key, value, revision, etag, updated_at = row
        return Revision(key, bytes(value), revision, etag, datetime.fromisoformat(updated_at))

    async def get(self, key: str) -> Revision | None:
        def read() -> Revision | None:
            row = self._conn.execute(
                "SELECT key, value, revision, etag, updated_at FROM kv WHERE key = ?", (key,)
            ).fetchone()
            return self._row(row) if row else None

        return await self._run(read)

    async def list(self, prefix: str) -> list[Revision]:
        def read() -> list[Revision]:
            rows = self._conn.execute(
                "SELECT key, value, revision, etag, updated_at FROM kv"
                " WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
            return [self._row(r) for r in rows]

        return await self._run(read)

    async def put(
        self, key: str, value: bytes, expected: str | _Absent | None = None, audit: AuditEntry | None = None
    ) -> Revision:
        def write() -> Revision:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                self._catch_up(db)
                current = db.execute("SELECT etag FROM kv WHERE key = ?", (key,)).fetchone()
                if expected is ABSENT and current is not None:
                    raise EtagMismatch(key)
                if isinstance(expected, str) and (current is None or current[0] != expected):
                    raise EtagMismatch(key)
                number = self._next_revision(db)
                revision = Revision(
                    key, value, number, make_etag(number, value), datetime.now(UTC)
                )
                db.execute(
                    "INSERT INTO kv (key, value, revision, etag, updated_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                    " revision = excluded.revision, etag = excluded.etag,"
                    " updated_at = excluded.updated_at",
                    (key, value, number, revision.etag, revision.updated_at.isoformat()),
                )
                self._remember(db, key, number, value, revision.etag, revision.updated_at)
                if audit is not None:
                    db.execute("INSERT INTO audit (time, record) VALUES (?, ?)", audit)
                self._announce(number)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self._took(number)
            return revision

        return await self._write(write, lambda revision: Change(key, revision, revision.revision))

    async def delete(self, key: str, expected: str | None = None, audit: AuditEntry | None = None) -> bool:
        def remove() -> int | None:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                self._catch_up(db)
                current = db.execute("SELECT etag FROM kv WHERE key = ?", (key,)).fetchone()
                if expected is not None and (current is None or current[0] != expected):
                    raise EtagMismatch(key)
                if current is None:
                    db.execute("ROLLBACK")
                    return None
                number = self._next_revision(db)
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
                self._remember(db, key, number, None, None, datetime.now(UTC))
                if audit is not None:
                    db.execute("INSERT INTO audit (time, record) VALUES (?, ?)", audit)
                self._announce(number)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self._took(number)
            return number

        number = await self._write(remove, lambda number: None if number is None else Change(key, None, number))
        return number is not None

    async def _write(self, fn: Callable[[], T], change: Callable[[T], Change | None]) -> T:
        """Run a write and tell the watchers once it is committed, also when the caller gave up
        meanwhile (its deadline passed): the thread commits regardless, and a change nobody
        published would leave every follower serving the revision before it. The store thread
        hands the change to the event loop itself, behind any other process's changes it took up
        first, so watchers get them in the order the thread saw them, before the caller resumes."""

        def write() -> T:
            try:
                result = fn()
            except BaseException:
                self._hand_over()  # what other processes wrote, read before this write failed
                raise
            event = change(result)
            self._hand_over(event)
            return result

        return await asyncio.shield(asyncio.ensure_future(self._run(write)))

    def _announce(self, number: int) -> None:
        """Store thread, under the write lock, before the commit: tell the other processes the
        newest revision (a commit that fails after it costs them one needless look)."""
        if self._counter is not None:
            _COUNTER.pack_into(self._counter, 0, number)

    def _catch_up(self, db: sqlite3.Connection) -> None:
        """Inside a transaction on `db`, when shared: read the changes other processes committed
        since this one last looked, for `_hand_over` (a `Resync` if the history no longer reaches
        back that far). Called on the store thread (writes) or the loop (`settle`)."""
        if not self.shared:
            return
        with self._sync_lock:
            self._catch_up_locked(db)

    def _took(self, number: int) -> None:
        """Store thread, after this process committed revision `number`."""
        if self.shared:
            with self._sync_lock:
                self._synced = max(self._synced, number)

    def _catch_up_locked(self, db: sqlite3.Connection) -> None:
        revision, since = db.execute(
            "SELECT (SELECT value FROM meta WHERE name = 'revision'), (SELECT value FROM meta WHERE name = 'history_from')"
        ).fetchone()
        if revision <= self._synced:
            return
        if self._synced < since:
            self._others.append(Resync(revision))
        else:
            rows = db.execute(
                "SELECT key, value, revision, etag, updated_at FROM history WHERE revision > ? AND revision <= ?"
                " ORDER BY revision", (self._synced, revision),
            ).fetchall()
            self._others.extend(self._history_row(row) for row in rows)
        self._synced = revision

    def _hand_over(self, own: Change | None = None) -> None:
        """Store thread: queue the changes taken up (the others', then `own`) for publication on
        the event loop, in this order."""
        with self._sync_lock:
            events = self._others
            self._others = []
        if own is not None:
            events.append(own)
        if events and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._publish_all, events)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass

    def settle(self) -> builtins.list[Change | Resync]:
        """Event loop: publish now every change another process has written and this one has
        not published yet; returns them, oldest first (nothing, at the cost of one comparison,
        when there are none; always nothing when the store is not shared)."""
        counter = self._counter
        if counter is None or _COUNTER.unpack_from(counter)[0] <= self._published:
            return []
        reader = self._reader
        assert reader is not None
        try:
            reader.execute("BEGIN")  # one snapshot for the revision and the history rows below it
            try:
                self._catch_up(reader)
            finally:
                _rollback(reader)
        except sqlite3.Error as error:  # busy or failing disk: the follower tries again
            log.debug("cannot read other workers' changes right now (%s)", _cause(error)[1])
            return []
        with self._sync_lock:
            events = self._others
            self._others = []
        return self._publish_all(events)

    async def _follow_others(self) -> None:
        """Shared store: look for other processes' writes every FOLLOW_SECONDS."""
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            self.settle()

    async def import_audit(self, entries: builtins.list[AuditEntry]) -> None:
        def write() -> None:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO audit (time, record) VALUES (?, ?)", entries)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

        if entries:
            await self._run(write)

    async def read_audit(self, after: int, since: int | None, limit: int) -> builtins.list[tuple[int, int, bytes]]:
        def read() -> list[tuple[int, int, bytes]]:
            rows = self._conn.execute(
                "SELECT seq, time, record FROM audit WHERE seq > ? AND time >= ? ORDER BY seq LIMIT ?",
                (after, since if since is not None else -(1 << 62), limit),
            ).fetchall()
            return [(seq, at, bytes(record)) for seq, at, record in rows]

        return await self._run(read)

    async def prune_audit(self, before: int) -> int:
        def delete() -> int:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                count = db.execute("DELETE FROM audit WHERE time < ?", (before,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return count

        return await self._run(delete)

    async def ping(self) -> None:
        failing = self._write_failure is not None

        def probe() -> None:
            # A write lock proves more than a read: the file is there, writable and not held.
            # Writes wait up to 5 s for a lock; a readiness probe should not.
            db = self._conn
            db.execute("PRAGMA busy_timeout = 500")
            try:
                db.execute("BEGIN IMMEDIATE")
                if not failing:
                    db.execute("ROLLBACK")
                    return
                # The lock costs no disk space: only a committed write shows there is room again.
                try:
                    db.execute("DELETE FROM probe")
                    db.execute("INSERT INTO probe (data) VALUES (zeroblob(?))", (_PROBE_BYTES,))
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
            finally:
                db.execute("PRAGMA busy_timeout = 5000")

        await self._run(probe)
        if failing:
            self._write_failure = None

    @staticmethod
    def _next_revision(db: sqlite3.Connection) -> int:
        (number,) = db.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value"
        ).fetchone()
        return number

    def _remember(
        self, db: sqlite3.Connection, key: str, number: int, value: bytes | None, etag: str | None, at: datetime
    ) -> None:
        """Keep a change in the history, in the transaction that makes it, and forget the oldest
        beyond `history_keep`. Every revision is one change, so revisions number the rows."""
        db.execute(
            "INSERT INTO history (revision, key, value, etag, updated_at) VALUES (?, ?, ?, ?, ?)",
            (number, key, value, etag, at.isoformat()),
        )
        oldest_kept = number - self._history_keep
        if oldest_kept > 0:
            db.execute("DELETE FROM history WHERE revision <= ?", (oldest_kept,))
            db.execute(
                "UPDATE meta SET value = max(value, ?) WHERE name = 'history_from'", (oldest_kept,)
            )

    async def revision(self) -> int:
        def read() -> int:
            (number,) = self._conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            return int(number)

        return await self._run(read)

    async def history(self, key: str, after: int) -> builtins.list[Change] | None:
        return await self._run(lambda: self._changes_after(after, key=key))

    def _changes_after(self, after: int, *, key: str | None = None, prefix: str = "") -> builtins.list[Change] | None:
        """Changes of `key` (or under `prefix`) above revision `after`, oldest first; None when
        the history no longer reaches back to `after`, or `after` is a revision this store has
        never had (another store's, a restored backup's)."""
        db = self._conn
        meta = dict(db.execute("SELECT name, value FROM meta WHERE name IN ('revision', 'history_from')").fetchall())
        if after < meta["history_from"] or after > meta["revision"]:
            return None
        if key is not None:
            rows = db.execute(
                "SELECT key, value, revision, etag, updated_at FROM history"
                " WHERE key = ? AND revision > ? ORDER BY revision", (key, after),
            ).fetchall()
        else:
            rows = db.execute(
                "SELECT key, value, revision, etag, updated_at FROM history"
                " WHERE substr(key, 1, ?) = ? AND revision > ? ORDER BY revision", (len(prefix), prefix, after),
            ).fetchall()
        return [self._history_row(row) for row in rows]

    @staticmethod
    def _history_row(row: tuple) -> Change:
        key, value, number, etag, updated_at = row
        if value is None:
            return Change(key, None, number)
        return Change(key, Revision(key, bytes(value), number, etag, datetime.fromisoformat(updated_at)), number)

    async def claim_key(self, key_id: str) -> None:
        def claim() -> str:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO claims (name, value) VALUES ('key_id', ?)", (key_id,))
                (claimed,) = db.execute("SELECT value FROM claims WHERE name = 'key_id'").fetchone()
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return str(claimed)

        claimed = await self._run(claim)
        if claimed != key_id:
            raise FailedPrecondition(
                f"the data in {self.path} was encrypted with key {claimed}, but the configured key is"
                f" {key_id}; start the server with the key the data was written with ({claimed})"
            )

    async def watch(self, prefix: str, after: int | None = None) -> AsyncIterator[Change | Resync]:
        queue: asyncio.Queue[Change | Resync] = asyncio.Queue()
        entry = (prefix, queue)
        self._watchers.append(entry)  # before the history is read: nothing falls between the two
        try:
            last = -1
            if after is not None:
                replay = await self._run(lambda: self._changes_after(after, prefix=prefix))
                if replay is None:
                    last = self._published
                    yield Resync(await self.revision())
                else:
                    for change in replay:
                        last = change.at
                        yield change
            while True:
                event = await queue.get()
                if isinstance(event, Resync):  # another process's writes outran the history
                    last = event.revision
                    yield event
                elif event.at > last:  # a change both read from the history and published
                    yield event
        finally:
            self._watchers.remove(entry)

    def _publish_all(self, events: builtins.list[Change | Resync]) -> builtins.list[Change | Resync]:
        """Publish what is newer than what was published: the store thread and `settle` each
        hand over changes in revision order, and either may have published some of the other's
        first. Returns what was published."""
        published = []
        for event in events:
            if isinstance(event, Resync):
                if event.revision <= self._published:
                    continue
                self._published = event.revision
                for _, queue in self._watchers:
                    queue.put_nowait(event)
            else:
                if event.at <= self._published:
                    continue
                self._publish(event)
            published.append(event)
        return published

    def _publish(self, change: Change) -> None:
        self._published = max(self._published, change.at)
        for prefix, queue in self._watchers:
            if change.key.startswith(prefix):
                queue.put_nowait(change)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise FailedPrecondition("the store is closed")
        return self._db

    async def close(self) -> None:
        await stop_task(self._follower)
        self._follower = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._counter is not None:
            self._counter.close()
            self._counter = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
