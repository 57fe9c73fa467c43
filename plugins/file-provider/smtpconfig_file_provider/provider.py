"""`FileProvider`: the secret is the content of a file under a configured directory."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smtpconfig.plugin import (
    AccessDenied,
    BadParameters,
    Parameter,
    ProviderUnavailable,
    Resolved,
    Secret,
    SecretNotFound,
    SecretProvider,
    strip_newline,
)
from smtpconfig_file_provider.paths import NotRegular, TooBig, check_name, read_regular, resolve_inside

#: Seconds the service may cache a value: short, so a rotated file is picked up soon.
TTL_SECONDS = 5.0
DEFAULT_MAX_BYTES = 65536
#: The largest MaxBytes an instance may set: a secret file, not a disk image.
MAX_BYTES_LIMIT = 1 << 24
#: A file modified this recently is read again on every call, because a rewrite within one
#: timestamp tick can keep inode, size and mtime unchanged (git's "racy clean" problem).
RACY_NS = 2_000_000_000
#: Resolution and open are retried when the file vanishes in between, as it does for a moment
#: while Kubernetes swaps the ``..data`` symlink and removes the old timestamped directory: again
#: as long as each attempt resolves to a new path (a swap happened), at most this many times.
ATTEMPTS = 10


@dataclass(frozen=True)
class _Entry:
    #: (real path, st_dev, st_ino, st_mtime_ns, st_size) of what was read.
    identity: tuple[str, int, int, int, int]
    text: Secret


def _identity(path: str, status: os.stat_result) -> tuple[str, int, int, int, int]:
    return (path, status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


class FileProvider(SecretProvider):
    name = "file"
    display_name = "Mounted secret file"
    description = (
        "Reads a secret from a file under a directory, such as a Kubernetes secret volume or "
        "Docker's /run/secrets. The file is read again when it changes. StripNewline (default "
        "true) removes exactly one trailing \\n or \\r\\n and nothing else."
    )
    parameters = (
        Parameter(
            "Directory",
            kind="path",
            description="Absolute path of the directory that holds the secret files, e.g. /run/secrets. Made "
            "through the API, it must be in or under a directory the server's file_directories setting lists.",
        ),
        Parameter(
            "StripNewline",
            kind="bool",
            required=False,
            default="true",
            description="true: remove exactly one trailing \\n or \\r\\n; false: use the content as it is.",
        ),
        Parameter(
            "MaxBytes",
            kind="int",
            required=False,
            default=str(DEFAULT_MAX_BYTES),
            minimum=1,
            maximum=MAX_BYTES_LIMIT,
            description="Largest file accepted, in bytes.",
        ),
        Parameter(
            "File",
            instance_level=True,
            description="File name relative to Directory, e.g. smtp-password; it may not lead outside Directory.",
        ),
    )
    default_ttl = TTL_SECONDS

    def __init__(self, *, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], _Entry] = {}

    def resolve(self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]) -> Resolved:
        # Typed and checked by the host: an absolute Directory, a bool and a bounded int.
        base = _directory(initialization["Directory"])
        strip = initialization["StripNewline"]
        max_bytes = initialization["MaxBytes"]
        file = instance_parameters.get("File") or ""
        check_name(file)
        text = self._read(base, file, max_bytes)
        if strip:
            text = strip_newline(text)
        if not text:
            raise SecretNotFound(f"file {file!r} is empty")
        return Resolved(Secret(text), ttl=TTL_SECONDS)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def _read(self, base: str, file: str, max_bytes: int) -> str:
        key = (base, file)
        previous = None
        for attempt in range(1, ATTEMPTS + 1):
            target = resolve_inside(base, file)
            retry = target != previous and attempt < ATTEMPTS
            previous = target
            try:
                status = os.stat(target, follow_symlinks=False)
            except OSError as error:
                if _vanished(error) and retry:
                    continue
                raise _provider_error(error, file) from None
            if status.st_size > max_bytes:
                raise _too_big(file, max_bytes)
            with self._lock:
                entry = self._cache.get(key)
            if entry is not None and entry.identity == _identity(target, status):
                return entry.text.reveal()

            try:
                data, status = read_regular(target, max_bytes)
            except OSError as error:
                if _vanished(error) and retry:
                    continue
                raise _provider_error(error, file) from None
            except NotRegular:
                raise BadParameters(f"File {file!r} is not a regular file", parameter="File") from None
            except TooBig:
                raise _too_big(file, max_bytes) from None

            # Decoded outside an except block: a UnicodeDecodeError holds the bytes it failed on,
            # and it must not ride along as the context of the error raised here.
            text = _utf8(data)
            if text is None:
                raise BadParameters(f"file {file!r} is not UTF-8 text", parameter="File")
            if time.time_ns() - status.st_mtime_ns >= RACY_NS:
                with self._lock:
                    self._cache[key] = _Entry(_identity(target, status), Secret(text))
            else:
                with self._lock:
                    self._cache.pop(key, None)
            return text
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _vanished(error: OSError) -> bool:
    # ELOOP: O_NOFOLLOW met a symlink swapped in after resolution.
    return error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _provider_error(error: OSError, file: str) -> Exception:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return SecretNotFound(f"no file {file!r} in Directory")
    if error.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"file {file!r}: permission denied")
    if error.errno == errno.ELOOP:
        return BadParameters(f"File {file!r}: too many levels of symbolic links", parameter="File")
    return ProviderUnavailable(f"file {file!r}: {os.strerror(error.errno or 0)}")


def _too_big(file: str, max_bytes: int) -> BadParameters:
    return BadParameters(f"file {file!r} is larger than MaxBytes ({max_bytes})", parameter="MaxBytes")


def _directory(directory: str) -> str:
    base = os.path.realpath(directory)
    if not os.path.isdir(base):
        raise BadParameters(f"Directory {directory!r} is not a directory", parameter="Directory")
    return base
