"""Naming a file inside a base directory, and reading it, without ever leaving that directory."""

from __future__ import annotations

import os
import stat
from pathlib import PurePosixPath

from smtpconfig.plugin import BadParameters


def check_name(file: str) -> None:
    """Refuse names that point outside the directory on their face, before touching the disk."""
    if not file:
        raise BadParameters("File must name a file in Directory", parameter="File")
    if "\0" in file:
        raise BadParameters("File contains a NUL character", parameter="File")
    path = PurePosixPath(file)
    if path.is_absolute():
        raise BadParameters(f"File {file!r} must be relative to Directory", parameter="File")
    if ".." in path.parts:
        raise BadParameters(f"File {file!r} must not contain '..'", parameter="File")


def resolve_inside(base: str, file: str) -> str:
    """The real path of `file` under `base` (itself a real path), with every symlink followed.

    Symlinks are fine while their target stays inside `base`: a Kubernetes secret volume holds
    ``key -> ..data/key`` and ``..data -> ..2024_01_01_00_00_00.123/``.
    """
    target = os.path.realpath(os.path.join(base, file))
    if target == base or os.path.commonpath((base, target)) != base:
        raise BadParameters(f"File {file!r} resolves outside Directory", parameter="File")
    return target


class NotRegular(Exception):
    """The path names a directory, FIFO, device or socket."""


class TooBig(Exception):
    """The file holds more than the allowed number of bytes."""


def read_regular(path: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file of at most `max_bytes`; return its bytes and the status of what was read.

    `path` is a resolved real path. O_NOFOLLOW refuses a symlink swapped in after resolution
    (ELOOP), and O_NONBLOCK keeps a FIFO from blocking the open.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegular
        if status.st_size > max_bytes:
            raise TooBig
        chunks: list[bytes] = []
        left = max_bytes + 1  # one more than allowed shows a file that grew after fstat
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise TooBig
        return data, status
    finally:
        os.close(fd)
