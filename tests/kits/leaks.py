"""A run in which asyncio destroys a task still pending fails, naming the task.

A task destroyed while pending waited on something that was never going to happen: in the
service that is a leak, one task and what it holds for every time it happens (the etcd watch's
request side once leaked so, one task per member the watch left). asyncio only logs it, when the
garbage collector gets to the task, so the line lands in whatever test runs then, and a test
that reads the log fails for a reason of someone else's. This plugin collects those records over
the whole run, collects the garbage once more at the end, and fails the run with each task's
description and the test that was running when it was found (the leak is in that test or an
earlier one).
"""

from __future__ import annotations

import gc
import logging

import pytest

DESTROYED = "Task was destroyed but it is pending!"


class DestroyedTasks(logging.Handler):
    """Keeps asyncio's "destroyed but pending" records, with the test running when each came."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[tuple[str, str]] = []
        self.running = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(DESTROYED):
            self.found.append((self.running, message[len(DESTROYED):].strip()))


_handler = DestroyedTasks()


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger("asyncio").addHandler(_handler)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _handler.running = nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()
    logging.getLogger("asyncio").removeHandler(_handler)
    if not _handler.found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", f"asyncio destroyed {len(_handler.found)} pending task(s)", red=True)
        for running, task in _handler.found:
            reporter.write_line(f"during {running or 'the session'}: {task[:400]}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
