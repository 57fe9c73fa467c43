"""What a `smtpconfig serve` supervisor (`workers` > 1) tells each of its worker processes, and what
a worker does for its supervisor: die with it, and say when it serves.

The supervisor (smtpconfig.cli.supervisor) starts each worker as `smtpconfig serve <the same
arguments> --worker ROLE`, ROLE being `WorkerRole.encode()`: the worker reads its settings as the
supervisor did and then takes the listen addresses (port 0 already replaced by the port the
supervisor chose), its replica name and whether it serves the Unix socket from its role.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
from dataclasses import asdict, dataclass

# The hidden `serve` flag that makes a process a worker.
WORKER_FLAG = "--worker"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    """One worker's part: its `index` (0 serves the Unix socket and starts first), the supervisor's
    pid, the descriptors it inherits (the pipe it says "ready" on; the store's lock, -1 for none)
    and the settings the supervisor decided for it."""

    index: int
    supervisor: int
    ready_fd: int
    lock_fd: int
    listen: tuple[str, ...]
    health_listen: str
    metrics_listen: str
    replica_name: str

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> WorkerRole:
        doc = json.loads(text)
        doc["listen"] = tuple(doc["listen"])
        return cls(**doc)


def follow_supervisor(supervisor: int) -> None:
    """Have the kernel send this process SIGTERM when its supervisor dies (PR_SET_PDEATHSIG), and
    stop now if it already has (this process then has another parent)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def report_ready(fd: int) -> None:
    """Tell the supervisor this worker serves: one byte on the pipe it handed down."""
    try:
        os.write(fd, b"R")
    finally:
        os.close(fd)


def port_taken(host: str, port: int, *, shared: bool = False) -> bool:
    """Whether something already listens on `host`:`port`. `shared`: a worker's check, which must
    pass where its own supervisor and fellow workers hold the port (SO_REUSEPORT) and still fail
    where another program does (one that did not set SO_REUSEPORT, as no other server does)."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # grpcio will say what is wrong with the name
    for family, kind, proto, _, where in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(where)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
    return False


def listen_refused(address: str) -> str:
    """What `serve` says when it cannot listen on `address`."""
    return (
        f"cannot listen on {address}: the port is in use or the address is not on this machine;"
        " choose another with SMTPCONFIG_LISTEN=HOST:PORT (or --listen HOST:PORT)"
    )
