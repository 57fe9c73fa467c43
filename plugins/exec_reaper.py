"""Runs one command for the ``exec`` provider, and leaves nothing it started behind (Linux).

Usage: ``python -I -S exec_reaper.py REPORT_FD PROGRAM [ARGUMENT...]``

A process group does not hold a command's descendants: one started with ``setsid`` leaves it, and
killing the group then misses it. So the command runs as the child of this script, which marks
itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): every process the command starts
becomes the reaper's child when its own parent exits, whatever session or group it moved to. When
the command exits, or when the reaper gets SIGTERM (the provider's timeout), it kills its
remaining descendants, reaps them, and exits as the command did (the same status, or the same
signal). A command that cannot be started is reported on REPORT_FD as a JSON object and the
reaper exits 127; REPORT_FD is closed once the command runs.

Only the standard library, and no import of smtpconfig: it runs with ``-I -S`` in the command's
environment, which must not be able to change this script.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    """SIGTERM: the provider gave up on the command."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _children() -> list[int]:
    """Processes whose parent is this one."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def end_descendants() -> None:
    """Kill and reap every descendant. As the subreaper this process inherits the orphans of each
    one killed, so: kill the children, reap, look again, until no child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        children = _children()
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not children:
            time.sleep(0.01)  # one was being handed over as the list was read: look again
            continue
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _exit_as(status: int) -> None:
    """Exit with the command's wait status: its exit code, or death by its signal."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        sys.exit(128 + number)  # a signal that does not end a process
    sys.exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> None:
    report, command = int(argv[1]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # best effort: without it, the group kill still runs
    signal.signal(signal.SIGTERM, _stop)
    status = None
    try:
        try:
            child = subprocess.Popen(command, close_fds=True)
        except OSError as error:
            os.write(report, json.dumps({"errno": error.errno, "filename": error.filename}).encode())
            sys.exit(127)
        os.close(report)
        _, status = os.waitpid(child.pid, 0)
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup below must finish
    end_descendants()
    if status is None:
        sys.exit(128 + signal.SIGTERM)
    _exit_as(status)


if __name__ == "__main__":
    main(sys.argv)
