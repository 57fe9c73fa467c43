"""Owning the benchmark's subprocesses: start them, talk to them by lines, always end them.

Children run in their own session, so a Ctrl-C in the terminal reaches only the parent, which then
ends them in order (`Child.close`). Each child also exits when its stdin closes, so none survives
even a parent killed with SIGKILL. A program that ignores its stdin (OpenBao) is started with
`Child.program`: on Linux the kernel kills it when the parent dies, to the same effect.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from bench import BenchError
from smtpconfig.core.aio import default_event_loop

# The repository root: children run `python -m bench.<module>` from here.
ROOT = Path(__file__).resolve().parent.parent


# The event loop of every grpc.aio server the benchmark starts (`--event-loop`): `serve`'s own
# default unless told otherwise.
event_loop = default_event_loop()


def run_tool(name: str, args, measure, render) -> int:
    """The `main` of a measuring tool (`bench.profile`, `bench.stages`) once its arguments are
    parsed: children on `args.event_loop`, progress and errors on stderr prefixed with `name`, the
    result on stdout as `render` shows it, or as JSON with `--json`. Exit status 1 on a BenchError."""
    global event_loop
    event_loop = args.event_loop

    def progress(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    try:
        result = measure(args, progress)
    except BenchError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def checked_reply(line: str, what: str) -> dict:
    """A load generator's answer line (`bench.load`) for the measurement `what`, parsed: raises
    BenchError when the measurement failed or any of its calls did."""
    reply = json.loads(line)
    if not reply.pop("ok"):
        raise BenchError(f"{what}: {reply['error']}")
    if reply["errors"]:
        raise BenchError(f"{what}: {reply['errors']} calls failed, first: {reply['first_error']}")
    return reply


def child_env() -> dict[str, str]:
    """The parent's environment without SMTPCONFIG_* settings: the service under test takes its
    settings from the benchmark only and generates a throwaway key, never a real one. The one
    setting passed is the event loop, which the echo servers follow too (`bench.servers`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPCONFIG_")}
    env["SMTPCONFIG_EVENT_LOOP"] = event_loop
    return env


class Child:
    """One `python -m bench.<module>` subprocess, reached through its stdin and stdout."""

    def __init__(self, name: str, module: str, *args: str, patience: float = 5.0) -> None:
        self._start(name, [sys.executable, "-m", module, *args], patience, child_env(), subprocess.PIPE)

    @classmethod
    def program(cls, name: str, argv: Sequence[str], *, env: dict[str, str], output: IO[bytes]) -> Child:
        """Any executable, its stdout and stderr going to `output`. It is not expected to watch its
        stdin, so `close` sends SIGTERM at once, and on Linux it gets SIGKILL when the parent dies."""
        child = cls.__new__(cls)
        child._start(name, list(argv), 0.0, env, output, preexec_fn=_die_with_parent())
        return child

    def _start(self, name: str, argv: list[str], patience: float, env: dict[str, str], stdout, **popen) -> None:
        self.name = name
        self.patience = patience  # seconds `close` waits for a polite exit before SIGTERM
        self._buffer = b""
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=None if stdout is subprocess.PIPE else subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            bufsize=0,
            **popen,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_line(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
        except (BrokenPipeError, ValueError):
            raise BenchError(f"{self.name} exited unexpectedly (code {self.proc.poll()})") from None

    def read_line(self, timeout: float) -> str:
        """The next line the child writes, waiting at most `timeout` seconds."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name} gave no answer within {timeout:.0f}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                try:
                    code = self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
                raise BenchError(f"{self.name} exited unexpectedly (code {code}); see its output above")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def read_port(self, timeout: float = 30.0) -> int:
        """The `PORT <n>` line a server prints once it accepts calls."""
        line = self.read_line(timeout)
        word, _, port = line.partition(" ")
        if word != "PORT" or not port.isdigit():
            raise BenchError(f"{self.name} printed {line!r} instead of its port")
        return int(port)

    def close(self) -> None:
        """Close stdin (the polite stop), then SIGTERM, then SIGKILL; always reap."""
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        for stop, wait in ((None, self.patience), (proc.terminate, 3.0), (proc.kill, None)):
            if proc.poll() is not None:
                return
            if stop is not None:
                stop()
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _die_with_parent():
    """A function for `preexec_fn` that asks Linux for SIGKILL once the parent exits
    (PR_SET_PDEATHSIG), or None elsewhere. prctl is looked up here, before the fork, so the child
    only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL, 0, 0, 0)
