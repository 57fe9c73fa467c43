"""The data directory and the lock that gives one server its SQLite store.

One server owns a data directory at a time: it holds an exclusive advisory lock (flock) on
``store.lock``. With `workers` > 1 the supervisor takes the lock and hands the open file to its
workers (an inherited descriptor shares the lock), so that they share the store while an
unrelated second server is still refused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from smtpconfig.core.errors import FailedPrecondition

log = logging.getLogger(__name__)

LOCK_NAME = "store.lock"


def take(data_dir: Path) -> int:
    """Open and lock `data_dir`/store.lock; the descriptor holds the lock until it is closed."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FailedPrecondition(f"data directory {data_dir} is in use by another smtpconfig server") from None
    return fd


def adopt(fd: int, data_dir: Path) -> int:
    """Check that `fd`, handed down by a supervisor, is `data_dir`'s lock file and holds its lock
    (locking the same open file again succeeds; another server's lock would refuse it)."""
    try:
        held, there = os.fstat(fd), os.stat(data_dir / LOCK_NAME)
    except OSError:
        raise FailedPrecondition(f"the store lock handed to this worker is not {data_dir / LOCK_NAME}") from None
    if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
        raise FailedPrecondition(f"the store lock handed to this worker is not {data_dir / LOCK_NAME}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FailedPrecondition(f"data directory {data_dir} is in use by another smtpconfig server") from None
    return fd


def make_data_dir(data_dir: Path) -> Path | None:
    """Create the data directory (0700) and any missing parents; return the topmost directory
    this made, or None when the data directory existed."""
    if data_dir.is_dir():
        return None
    top = data_dir.absolute()
    while not top.parent.exists():
        top = top.parent
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return top if top.exists() else None


def remove_unused(top: Path, data_dir: Path) -> None:
    """Remove the data directory a failed start made (the key and admin token it wrote with it),
    unless another server has taken it in the meantime (it holds the store's lock)."""
    lock = data_dir / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR) if lock.exists() else None
    except OSError:
        return
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(top)
        log.info("removed %s, which this failed start had created", top)
    except OSError:  # locked by a server that is using it, or not ours to remove after all
        return
    finally:
        if fd is not None:
            os.close(fd)
