"""This replica's own audit log: records of tests, resolutions and refused calls as JSON lines.

Records that are not changes arrive at thousands per second, too many for a shared store, so each
replica appends them to `<data_dir>/audit/<replica>.jsonl` (mode 0600, directory 0700). Changes
keep their records in the store, in the transaction of the change (`smtpconfig.ops.audit`).

Chain: every line carries `prev`, the sha256 (hex) of the line before it (without its newline); the
first line of a rotated-to file chains to the last line of the file before it, and the very first
line of a replica has 64 zeros. A deleted, edited, reordered or torn line breaks the chain at the
line after it, which `verify` (`smtpconfig audit verify`) names. The chain cannot show that the
newest lines of the newest file were removed while the server was stopped: a copy of every record
on standard output (`audit_stdout`) to a log shipper is the anchor for that.

Writing: under `audit_fsync = "interval"` (the default) a record is written with its own write(2)
on the event loop before the call's answer leaves (the OS has it: a kill -9 of the server loses
nothing), and the writer task fsyncs at most once a second (a power loss may lose the last second).
Under `"batch"` (power-safe) callers queue their record and wait; one writer task takes everything
queued, writes it with one write(2) and fsyncs it on the writer thread, then releases every waiting
call, so one fsync serves every call that arrived meanwhile.

Fail-closed: when a group cannot be written (disk full, I/O error, a file size limit) its calls
get UNAVAILABLE "the audit log cannot be written: <cause>", and `healthy` turns False. A short
write is cut back to the last whole line, so the chain stays intact; the next group that can be
written (a call's, or `probe`'s from the readiness loop) starts with a record saying when writing
stopped and how many records were refused, and the log is healthy again without a restart.

One process writes a replica's log at a time: an advisory lock on `<replica>.lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from smtpconfig.core.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SUFFIX = ".jsonl"
REPLICA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Rotated files: `<replica>.<rotation number, 8 digits>.jsonl`, so that name order is age order.
_ROTATED = re.compile(r"^(?P<replica>.+)\.(?P<number>[0-9]{8,})\.jsonl\Z")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_quote = json.encoder.encode_basestring  # C: a str as a JSON string, quotes included
FSYNC_POLICIES = ("interval", "batch")
FSYNC_INTERVAL = 1.0
# The method name of the record a log writes about itself when writing works again.
RESUMED = "smtpconfig.audit/Resumed"


def line_hash(line: bytes) -> str:
    """What the next line's `prev` holds: the sha256 of `line` without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def iso_micros(at: int) -> str:
    """A time in microseconds since the epoch as RFC 3339 UTC with microseconds."""
    seconds, micros = divmod(at, 1_000_000)
    return f"{_iso_seconds(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4)
def _iso_seconds(seconds: int) -> str:
    # Records of one second share this part: formatted once, not once a record.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def log_files(directory: Path, replica: str) -> list[Path]:
    """`replica`'s files in `directory`, oldest first: the rotated ones, then the active one."""
    rotated = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            match = _ROTATED.match(path.name)
            if match and match["replica"] == replica:
                rotated.append((int(match["number"]), path))
    files = [path for _, path in sorted(rotated)]
    active = directory / f"{replica}{SUFFIX}"
    if active.exists():
        files.append(active)
    return files


def replicas_in(directory: Path) -> list[str]:
    """Every replica with a log in `directory`."""
    names = set()
    for path in directory.iterdir():
        match = _ROTATED.match(path.name)
        if match:
            names.add(match["replica"])
        elif path.name.endswith(SUFFIX) and path.is_file():
            names.add(path.name[: -len(SUFFIX)])
    return sorted(names)


class Fields(NamedTuple):
    """A record before it is chained: who, what, when (microseconds) and how it ended. A tuple:
    one is made for every audited call."""

    at: int
    identity: str
    method: str
    request_id: str
    outcome: str
    fields: tuple[str, ...] | list[str] = ()
    provider: int = 0
    message: str = ""


def record_doc(replica: str, seq: int, record: Fields) -> dict[str, Any]:
    """A record as its JSON object, without the chain; also the form copied to standard output."""
    return {
        "seq": seq, "time": iso_micros(record.at), "replica": replica, "identity": record.identity,
        "method": record.method, "request_id": record.request_id, "outcome": record.outcome,
        "fields": list(record.fields), "provider": record.provider, "message": record.message,
    }


def record_line(replica: str, seq: int, record: Fields, prev: str) -> bytes:
    """`record_doc` with `prev` as the log holds it: one JSON line (without its newline), the same
    bytes `json` makes of that object with separators "," and ":" and without ASCII escaping. Built
    from C-quoted strings, since a record is written for every audited call (a third of the
    encoder's time)."""
    return (
        f'{{"seq":{seq},"time":"{iso_micros(record.at)}","replica":{_quote(replica)},'
        f'"identity":{_quote(record.identity)},"method":{_quote(record.method)},'
        f'"request_id":{_quote(record.request_id)},"outcome":{_quote(record.outcome)},'
        f'"fields":[{",".join(map(_quote, record.fields))}],"provider":{int(record.provider)},'
        f'"message":{_quote(record.message)},"prev":"{prev}"}}'
    ).encode()


class _Pending(NamedTuple):
    record: Fields
    future: asyncio.Future[None] | None


class AuditFile:
    """The append-only, hash-chained, rotated log of one replica. `await AuditFile.open(...)`."""

    def __init__(
        self, directory: Path, replica: str, *, max_bytes: int, keep_files: int, fsync: str,
        stdout: TextIO | None, on_health: Callable[[bool], None],
    ) -> None:
        self.directory = directory
        self.replica = replica
        self.path = directory / f"{replica}{SUFFIX}"
        self._max_bytes = max_bytes
        self._keep_files = keep_files
        self._fsync = fsync
        self._stdout = stdout
        self._on_health = on_health
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-file")
        self._lock_fd = -1
        self._fd = -1
        self._size = 0  # bytes of whole lines in the active file: where the next line goes
        self._seq = 0
        self._prev = GENESIS
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._dirty_since: float | None = None
        self._syncing: asyncio.Task | None = None
        self._last_fsync = 0.0
        # Why the last group could not be written, since when (microseconds), how many records
        # were refused since; None while writing works.
        self.failure: str | None = None
        self._failed_at = 0
        self._refused = 0
        self._closing = False

    @classmethod
    async def open(cls, directory: Path, replica: str, **options: Any) -> AuditFile:
        audit = cls(directory, replica, **options)
        await asyncio.get_running_loop().run_in_executor(audit._executor, audit._open)
        audit._writer = asyncio.get_running_loop().create_task(audit._write_groups(), name="audit-file")
        return audit

    # --- opening ---------------------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._lock_fd = os.open(self.directory / f"{self.replica}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise FailedPrecondition(
                f"the audit log {self.path} is in use by another server: give each replica its own"
                " replica_name (or data_dir)"
            ) from None
        self._seq, self._prev = self._chain_head()
        self._open_active()

    def _chain_head(self) -> tuple[int, str]:
        """(seq, hash) of the last whole record of this replica's newest file holding one."""
        for path in reversed(log_files(self.directory, self.replica)):
            last = _last_line(path)
            if last is None:
                continue
            torn = not last.endswith(b"\n")
            if torn and path == self.path:
                # A crash in the middle of a write (power loss): keep the file as it is, for
                # verify to name, and go on in a new one from the last whole record.
                log.warning("the audit log %s ends in a torn line; it is rotated as it is", path)
                self._rotate_now()
                return self._chain_head()
            try:
                seq = int(json.loads(last)["seq"])
            except (ValueError, KeyError, TypeError):
                raise FailedPrecondition(
                    f"the last line of the audit log {path} is not a record; see `smtpconfig audit verify`"
                ) from None
            return seq, line_hash(last)
        return 0, GENESIS

    def _open_active(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)
        self._size = os.fstat(self._fd).st_size

    # --- appending -------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.failure is None

    async def append(self, record: Fields) -> None:
        """Chain and write `record`; returns once it is written (and fsynced, under "batch")."""
        pending = self.write(record)
        if pending is not None:
            await pending

    def write(self, record: Fields) -> asyncio.Future[None] | None:
        """`append` without a coroutine, for the path of every audited call: under "interval"
        `record` is written before this returns (None); under "batch" the future comes back that
        is done once its group is written and fsynced. Raises or fails the future with
        `Unavailable` naming the cause when it cannot be written."""
        if self._fsync != "batch":
            self._write_now(record)
            return None
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(record, future))
        self._wake.set()
        return future

    def _write_now(self, record: Fields) -> None:
        """Under "interval": write on the event loop, at once. A write(2) of a line to the page
        cache takes microseconds; handing it to the writer thread and waiting for the group cost a
        call more than the rest of a cached ResolveSmtp together (two loop wake-ups, the GIL passed
        to and fro, the answer sent an iteration later). The writer task only fsyncs."""
        clean = self._dirty_since is None
        try:
            if self.failure is None and self._size < self._max_bytes:
                self._write_one(record)
            else:
                self._write([_Pending(record, None)])
        except Exception as error:  # noqa: BLE001 - the caller gets UNAVAILABLE naming the cause
            raise self._fail([_Pending(record, None)], error) from None
        if clean and self._dirty_since is not None:
            self._wake.set()  # the writer task fsyncs within FSYNC_INTERVAL from now

    async def probe(self) -> None:
        """While writing fails, try to write again (the resumption record alone), so the log turns
        healthy without waiting for a call."""
        if self.failure is None:
            return
        marker = Fields(0, "", "", "", "")  # never written itself
        if self._fsync != "batch":
            with contextlib.suppress(Unavailable):
                self._write_now(marker)
            return
        self._wake.set()
        with contextlib.suppress(Unavailable):
            await self._group_done()

    async def _group_done(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(Fields(0, "", "", "", ""), future))  # a marker, never written
        self._wake.set()
        await future

    async def _write_groups(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if not self._closing:
                    self._wake.clear()
                    timeout = None
                    if self._dirty_since is not None:
                        timeout = max(0.0, self._last_fsync + FSYNC_INTERVAL - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
                if not self._pending:
                    if self._dirty_since is not None:
                        await self._sync()
                    if self._closing:
                        return
                    continue
            group, self._pending = self._pending, []
            try:
                # On the writer thread: the next group gathers meanwhile, and the loop serves
                # calls. (Writing a lone record on the loop saves the hop at 1 call in flight but
                # made groups small at 64: 10% fewer calls per second there, measured.)
                await loop.run_in_executor(self._executor, self._write, group)
            except Exception as error:  # noqa: BLE001 - the writer must outlive any one group
                self._fail(group, error)
            else:
                for item in group:
                    if item.future is not None and not item.future.done():
                        item.future.set_result(None)
            if (self._dirty_since is not None and self._syncing is None
                    and time.monotonic() - self._last_fsync >= FSYNC_INTERVAL):
                # Under steady load the queue is never empty: fsync beside the writes, not after.
                self._syncing = loop.create_task(self._sync())

    def _fail(self, group: list[_Pending], error: Exception) -> Unavailable:
        """Count the group's records as refused and fail its calls; return the error they get."""
        cause = _cause(error)
        if self.failure is None:
            self._failed_at = time.time_ns() // 1000
            log.error("the audit log %s cannot be written: %s; calls that need a record are refused", self.path, cause)
            self._on_health(False)
        self.failure = cause
        records = [item for item in group if item.record.method]
        self._refused += len(records)
        failure = Unavailable(f"the audit log cannot be written: {cause}")
        for item in group:
            if item.future is not None and not item.future.done():
                item.future.set_exception(failure)
        return failure

    def _write_one(self, record: Fields) -> None:
        """`_write` of one record under "interval" while writing works and the active file has
        room: what every audited call does, so without the group's lists and checks."""
        seq = self._seq + 1
        line = record_line(self.replica, seq, record, self._prev)
        data = line + b"\n"
        self._append(data)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()  # the writer task fsyncs within FSYNC_INTERVAL
        self._size += len(data)
        self._seq, self._prev = seq, hashlib.sha256(line).hexdigest()
        if self._stdout is not None:
            self.copy_out([line])

    def _append(self, data: bytes) -> None:
        """One write(2) of whole lines at the end of the active file; a write that fails part-way
        is cut back to the last whole line before it raises."""
        written = os.write(self._fd, data)
        if written != len(data):
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes could be written")

    def _write(self, group: list[_Pending]) -> None:
        """One group: chained lines, one write(2), fsync by policy (the writer thread)."""
        records = [item.record for item in group if item.record.method]
        if self.failure is not None:
            records.insert(0, self._resumed_record())
        if not records:
            return
        if self._size >= self._max_bytes:
            self._rotate()
        # A write that failed part-way left a torn line after the last whole one: cut it off.
        # Only a failed write leaves one, so the check waits for a failure.
        if self.failure is not None and os.fstat(self._fd).st_size != self._size:
            os.ftruncate(self._fd, self._size)
        lines, seq, prev = [], self._seq, self._prev
        for record in records:
            seq += 1
            line = record_line(self.replica, seq, record, prev)
            prev = hashlib.sha256(line).hexdigest()
            lines.append(line)
        data = b"\n".join(lines) + b"\n"
        self._append(data)
        if self._fsync == "batch":
            os.fsync(self._fd)
            self._last_fsync, self._dirty_since = time.monotonic(), None
        elif self._dirty_since is None:
            self._dirty_since = time.monotonic()  # the writer task fsyncs within FSYNC_INTERVAL
        self._size += len(data)
        self._seq, self._prev = seq, prev
        if self.failure is not None:
            log.warning("the audit log %s can be written again (after %s)", self.path, self.failure)
            self.failure, self._refused = None, 0
            self._on_health(True)
        if self._stdout is not None:
            self.copy_out(lines)

    def copy_out(self, lines: list[bytes]) -> None:
        """Copy lines to standard output for log shippers (`audit_stdout`); a full or closed pipe
        there does not stop auditing: the file is the record."""
        if self._stdout is None:
            return
        try:
            self._stdout.write("".join(line.decode() + "\n" for line in lines))
            self._stdout.flush()
        except (OSError, ValueError):
            pass

    def _resumed_record(self) -> Fields:
        return Fields(
            time.time_ns() // 1000, "", RESUMED, "", "OK",
            message=f"the audit log could not be written from {iso_micros(self._failed_at)} ({self.failure});"
            f" {self._refused} records were refused meanwhile, and their calls were not answered",
        )

    async def _sync(self) -> None:
        """fsync what was written so far (interval policy), on the writer thread. Writes made
        meanwhile mark the file dirty again."""
        self._last_fsync, self._dirty_since = time.monotonic(), None
        try:
            if self._fd >= 0:
                # A duplicate of the descriptor: the loop may rotate (close) the active file
                # meanwhile, and the duplicate still names the file written.
                fd = os.dup(self._fd)
                await asyncio.get_running_loop().run_in_executor(self._executor, _fsync_close, fd)
        except OSError as error:
            self._dirty_since = self._dirty_since or self._last_fsync
            log.error("the audit log %s could not be fsynced: %s", self.path, _cause(error))
        finally:
            self._syncing = None

    # --- rotation --------------------------------------------------------------------------------

    def _rotate(self) -> None:
        """Close the active file (fsynced) under the next rotation number; drop the oldest beyond
        `keep_files`. The new file's first record chains to the rotated file's last."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._rotate_now()
        self._open_active()
        _fsync_dir(self.directory)

    def _rotate_now(self) -> None:
        files = log_files(self.directory, self.replica)
        numbers = [int(m["number"]) for p in files if (m := _ROTATED.match(p.name))]
        target = self.directory / f"{self.replica}.{(max(numbers, default=0) + 1):08d}{SUFFIX}"
        os.rename(self.path, target)
        rotated = [p for p in log_files(self.directory, self.replica) if p != self.path]
        for old in rotated[: max(0, len(rotated) - self._keep_files)]:
            old.unlink(missing_ok=True)

    def prune(self, before: float) -> int:
        """Delete rotated files last written before `before` (seconds since the epoch)."""
        count = 0
        for path in log_files(self.directory, self.replica):
            if path != self.path and path.stat().st_mtime < before:
                path.unlink(missing_ok=True)
                count += 1
        return count

    # --- reading ---------------------------------------------------------------------------------

    def read(self, after: int, since: int | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` records with seq above `after` and time at or after `since`
        (microseconds), oldest first; lines that do not parse are skipped (verify names them)."""
        found: list[dict[str, Any]] = []
        for path in self._files_from(after):
            for doc in _records(path, after):
                if doc["seq"] <= after or (since is not None and doc["at"] < since):
                    continue
                found.append(doc)
                if len(found) >= limit:
                    return found
        return found

    def _files_from(self, after: int) -> Iterator[Path]:
        """The files that may hold records after seq `after`: skip those whose successor starts at
        or before it."""
        files = log_files(self.directory, self.replica)
        firsts = [_first_seq(path) for path in files]
        for i, path in enumerate(files):
            following = next((s for s in firsts[i + 1:] if s is not None), None)
            if following is not None and following <= after + 1:
                continue
            yield path

    async def read_async(self, after: int, since: int | None, limit: int) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.read, after, since, limit)

    async def close(self) -> None:
        """Write what is queued, fsync, release the file and its lock."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 10)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        if self._syncing is not None:
            with contextlib.suppress(Exception):
                await self._syncing

        def release() -> None:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

        await asyncio.get_running_loop().run_in_executor(self._executor, release)
        self._executor.shutdown(wait=True)


def _cause(error: Exception) -> str:
    """What went wrong, in words; never more of an unexpected error than its type."""
    if not isinstance(error, OSError):
        return f"an internal error ({type(error).__name__}); see the server log"
    if error.errno is not None and error.errno in _CAUSES:
        return _CAUSES[error.errno]
    return error.strerror or type(error).__name__


_CAUSES = {
    errno.ENOSPC: "the disk is full (ENOSPC)",
    errno.EIO: "the disk reported an I/O error (EIO)",
    errno.EFBIG: "the file is larger than this process may write (EFBIG)",
    errno.EACCES: "permission denied (EACCES)",
    errno.EROFS: "the file system is read-only (EROFS)",
    errno.EDQUOT: "the disk quota is exceeded (EDQUOT)",
}


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(path: Path) -> bytes | None:
    """The last line of `path` (with its newline if it has one), or None for an empty file."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        block, position, tail = 4096, end, b""
        while position > 0:
            step = min(block, position)
            position -= step
            f.seek(position)
            tail = f.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                return tail[cut + 1:]
        return tail


def _first_seq(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError), open(path, "rb") as f:
        return int(json.loads(f.readline())["seq"])
    return None


def _quick_seq(raw: bytes) -> int:
    """The seq of a line as this module writes it (it comes first), without parsing the rest;
    0 for a line of another shape, which is then parsed in full."""
    if raw.startswith(b'{"seq":'):
        end = raw.find(b",", 7, 30)
        if end > 0 and raw[7:end].isdigit():
            return int(raw[7:end])
    return 0


def _records(path: Path, after: int = 0) -> Iterator[dict[str, Any]]:
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # a torn last line, or one being written
            if after and _quick_seq(raw) <= after:
                continue  # paging on through a large file: no need to parse what is skipped
            try:
                doc = json.loads(raw)
                doc["at"] = _micros_of(doc["time"])
                doc["seq"] = int(doc["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            yield doc


def _micros_of(text: str) -> int:
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
