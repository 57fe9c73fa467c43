"""`smtpconfig serve` with `workers` > 1: a small supervisor process and N worker processes.

Each worker is `smtpconfig serve <the same arguments> --worker ROLE` (`WorkerRole`): a full
server, one replica of the service. The supervisor imports neither grpc nor the service (it runs
as `python -m smtpconfig.cli.supervisor`, which `serve` execs into once its settings are read), and
does only what must happen once for all of them:

- the data directory, and for SQLite the store's lock, which the workers inherit (an unrelated
  second server on the same data directory is still refused);
- the TCP ports: a fixed port is checked free of other programs, port 0 is replaced by a free
  port; the supervisor keeps a socket bound to each (SO_REUSEPORT, not listening) so that no
  other program takes it between worker starts, and every worker listens on it (SO_REUSEPORT);
- worker 0 starts first and alone (it makes the key, the admin token and the database on a first
  start, and serves the Unix socket, which grpcio can neither share nor take as an inherited
  listening socket); the others start once it serves. If worker 0 cannot start, the supervisor
  exits with its status: the worker has logged why, as a single server would.
- a worker that ends is started again after a delay that doubles from 0.5 s to 30 s while it keeps
  ending within a minute; one that fails START_ATTEMPTS times in a row before serving stops the
  supervisor (exit 1) instead of looping;
- SIGTERM or SIGINT is passed to every worker, which drains its calls for grace_period; workers
  still running grace_period + 15 s later are killed. Workers get SIGTERM when the supervisor
  dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from smtpconfig import settings as settings_mod
from smtpconfig.core.errors import FailedPrecondition, SmtpConfigError
from smtpconfig.core.workers import WORKER_FLAG, WorkerRole, listen_refused, port_taken
from smtpconfig.ops import logs
from smtpconfig.settings import Settings, split_address
from smtpconfig.store import lock as store_lock

log = logging.getLogger("smtpconfig.cli.supervisor")  # also when run as __main__

EXIT_FAILED = 1  # as the CLI's (smtpconfig.cli.client, which imports grpc)
# Failures in a row before serving after which a worker is not started again.
START_ATTEMPTS = 5
FIRST_DELAY = 0.5
LONGEST_DELAY = 30.0
# A worker that served this long before it ended is restarted after FIRST_DELAY again.
STEADY_SECONDS = 60.0
# Beyond grace_period, how long stopping workers get before they are killed.
STOP_MARGIN = 15.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve`'s arguments: --config, a flag for each setting whose row has one (stored under the
    setting's name), and the hidden flag that makes a process a worker."""
    parser.add_argument("--config", type=Path, help="TOML settings file (env: SMTPCONFIG_CONFIG)")
    for name, flag in settings_mod.FLAGS.items():
        parser.add_argument(flag.name, dest=name, help=flag.help, **flag.options)
    parser.add_argument(WORKER_FLAG, dest="worker", help=argparse.SUPPRESS)


def load_settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in settings_mod.FLAGS}
    return settings_mod.load(flags=flags, config_file=args.config)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    ready_pipe: int | None = None  # read end: one byte once the worker serves, EOF if it ends first
    serving_since: float | None = None
    failures: int = 0  # ended before serving, in a row
    quick_ends: int = 0  # ended within STEADY_SECONDS of serving, in a row
    restart_at: float | None = None


class Supervisor:
    """The worker processes of one `serve`, and the lock and ports they share."""

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv
        self.count = settings.processes
        self.workers = [_Worker(i) for i in range(self.count)]
        self._created: Path | None = None
        self._lock_fd: int | None = None
        self._held: list[socket.socket] = []
        self._listen: tuple[str, ...] = ()
        self._health_listen = ""
        self._stopping = False
        self.served = False  # some worker has served: a failed start undoes nothing
        self._wakeup_r = self._wakeup_w = -1

    # --- what the workers share -----------------------------------------------------------------

    def prepare(self) -> None:
        """The data directory, the store's lock and the ports; raises FailedPrecondition."""
        settings = self.settings
        self._created = store_lock.make_data_dir(settings.data_dir)
        if settings.store == "sqlite":
            self._lock_fd = store_lock.take(settings.data_dir)
        self._listen = tuple(self._reserve(address) for address in settings.listen)
        if settings.health_listen:
            self._health_listen = self._reserve(settings.health_listen)

    def _reserve(self, address: str) -> str:
        """Check that no other program listens on `address`, bind a socket to it (SO_REUSEPORT,
        not listening) that keeps it for the workers, and return it with its port (port 0: a free
        one, the same on every address the host name has)."""
        host, port = split_address(address)
        if port_taken(host, port):
            raise FailedPrecondition(listen_refused(address))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError:
            raise FailedPrecondition(listen_refused(address)) from None
        for _ in range(20):  # port 0: another free port when one is free on one address only
            chosen, held = port, []
            try:
                for family, kind, proto, _, where in infos:
                    sock = socket.socket(family, kind, proto)
                    held.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.bind((where[0], chosen, *where[2:]))
                    chosen = sock.getsockname()[1]
            except OSError:
                for sock in held:
                    sock.close()
                if port:
                    raise FailedPrecondition(listen_refused(address)) from None
                continue
            self._held.extend(held)
            return f"{address.rsplit(':', 1)[0]}:{chosen}"
        raise FailedPrecondition(listen_refused(address))

    def _role(self, index: int, ready_fd: int) -> WorkerRole:
        settings = self.settings
        metrics = settings.metrics_listen
        if metrics:
            host, port = split_address(metrics)
            if port:  # worker i serves its own metrics on port + i: counts of one process each
                metrics = f"{metrics.rsplit(':', 1)[0]}:{port + index}"
        suffix = f"-w{index}"
        return WorkerRole(
            index=index, supervisor=os.getpid(), ready_fd=ready_fd,
            lock_fd=self._lock_fd if self._lock_fd is not None else -1,
            listen=self._listen, health_listen=self._health_listen, metrics_listen=metrics,
            replica_name=settings.replica[: 64 - len(suffix)] + suffix,
        )

    def release(self, *, failed: bool) -> None:
        for sock in self._held:
            sock.close()
        self._held = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if failed and self._created is not None:
            store_lock.remove_unused(self._created, self.settings.data_dir)

    # --- workers --------------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        read_end, write_end = os.pipe()
        role = self._role(worker.index, write_end)
        keep = (write_end,) if self._lock_fd is None else (write_end, self._lock_fd)
        command = [sys.executable, "-m", "smtpconfig.cli", "serve", *self.argv, WORKER_FLAG, role.encode()]
        try:
            worker.proc = subprocess.Popen(command, pass_fds=keep)
        finally:
            os.close(write_end)
        worker.ready_pipe = read_end
        worker.serving_since = None
        worker.restart_at = None

    def _read_ready(self, worker: _Worker) -> None:
        assert worker.ready_pipe is not None
        data = os.read(worker.ready_pipe, 16)
        os.close(worker.ready_pipe)
        worker.ready_pipe = None
        if data and worker.proc is not None and worker.proc.poll() is None:
            worker.serving_since = time.monotonic()
            worker.failures = 0
            self.served = True

    def _ended(self, worker: _Worker) -> str:
        """Reap an ended worker; returns how it ended, in words."""
        assert worker.proc is not None
        code = worker.proc.returncode
        pid = worker.proc.pid
        worker.proc = None
        if worker.ready_pipe is not None:
            os.close(worker.ready_pipe)
            worker.ready_pipe = None
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return f"worker {worker.index} (pid {pid}) ended ({how})"

    def _schedule_restart(self, worker: _Worker, how: str) -> bool:
        """Plan the restart of an ended worker; False when it keeps failing to start."""
        now = time.monotonic()
        if worker.serving_since is None:
            worker.failures += 1
            if worker.failures >= START_ATTEMPTS:
                log.error("%s before serving, %d times in a row; stopping", how, worker.failures)
                return False
        elif now - worker.serving_since >= STEADY_SECONDS:
            worker.quick_ends = 0
        delay = min(FIRST_DELAY * 2 ** worker.quick_ends, LONGEST_DELAY)
        worker.quick_ends += 1
        worker.restart_at = now + delay
        log.warning("%s; starting it again in %gs", how, delay)
        return True

    # --- running --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True

    def run(self) -> int:
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)
        signal.set_wakeup_fd(self._wakeup_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        try:
            code = self._start_first()
            if code is None:
                for worker in self.workers[1:]:
                    self._spawn(worker)
                code = self._watch()
        finally:
            self._stop_all()
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
        return code

    def _start_first(self) -> int | None:
        """Start worker 0 and wait until it serves: None; or the status to exit with when it
        ended first (its own log says why) or a stop was asked for."""
        first = self.workers[0]
        self._spawn(first)
        while first.serving_since is None:
            self._wait(None)
            if self._stopping:
                return 0
            if first.ready_pipe is not None and self._readable(first.ready_pipe):
                self._read_ready(first)
            if first.proc is not None and first.proc.poll() is not None and first.serving_since is None:
                code = first.proc.returncode
                log.debug("%s before serving", self._ended(first))
                return code if code > 0 else EXIT_FAILED
        log.info("worker 0 serves; starting %d more (workers = %d)", self.count - 1, self.count)
        return None

    def _watch(self) -> int:
        announced = False
        while not self._stopping:
            now = time.monotonic()
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            self._wait(max(0.0, min(due) - now) if due else None)
            if self._stopping:
                break
            for worker in self.workers:
                if worker.ready_pipe is not None and self._readable(worker.ready_pipe):
                    self._read_ready(worker)
                if worker.proc is not None and worker.proc.poll() is not None:
                    if not self._schedule_restart(worker, self._ended(worker)):
                        return EXIT_FAILED
                if worker.restart_at is not None and worker.restart_at <= time.monotonic():
                    self._spawn(worker)
            if not announced and all(w.serving_since is not None for w in self.workers):
                announced = True
                log.info("%d workers serving on %s (pids %s)", self.count, ", ".join(self._listen),
                         ", ".join(str(w.proc.pid) for w in self.workers if w.proc is not None))
        return 0

    def _wait(self, timeout: float | None) -> None:
        """Until a signal comes (a worker ended, a stop), a worker says it serves, or `timeout`."""
        pipes = [w.ready_pipe for w in self.workers if w.ready_pipe is not None]
        readable, _, _ = select.select([self._wakeup_r, *pipes], [], [], timeout)
        if self._wakeup_r in readable:
            try:
                while os.read(self._wakeup_r, 512):
                    pass
            except BlockingIOError:
                pass

    @staticmethod
    def _readable(fd: int) -> bool:
        return bool(select.select([fd], [], [], 0)[0])

    def _stop_all(self) -> None:
        """SIGTERM to every worker; SIGKILL to those still running grace_period + STOP_MARGIN later."""
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        if not running:
            return
        log.info("stopping %d workers", len(running))
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_period + STOP_MARGIN
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        for worker in self.workers:
            if worker.proc is not None:
                self._ended(worker)


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run `settings.processes` workers of `smtpconfig serve` `argv` until SIGTERM or SIGINT."""
    supervisor = Supervisor(settings, argv)
    try:
        supervisor.prepare()
    except SmtpConfigError as error:
        supervisor.release(failed=True)
        log.error("cannot start: %s", error)
        return EXIT_FAILED
    code = EXIT_FAILED
    try:
        code = supervisor.run()
    finally:
        supervisor.release(failed=not supervisor.served)
    if code == 0:
        log.info("stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    """`python -m smtpconfig.cli.supervisor SERVE-ARGUMENTS`, as `serve` execs it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="smtpconfig serve")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args)
    except settings_mod.SettingsError as error:
        print(f"smtpconfig: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    return supervise(settings, argv)


if __name__ == "__main__":
    sys.exit(main())
