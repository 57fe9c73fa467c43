"""The server's default deadline for calls that set none, kept by one task instead of a timer a call.

`asyncio.timeout` per call costs a timer handle pushed on the loop's heap and cancelled again, and
every call of a server has the same default deadline; so calls are kept in a dict in the order
they started, which is also the order in which their deadlines pass, and one sweeper task wakes
when the oldest is due and cancels every task past its deadline. A call leaves the dict when it
ends (or when it no longer needs the deadline), which costs a dict operation.

The sweeper ends a call by cancelling its task; `expired` tells that cancellation (taken back, so
the caller can answer DEADLINE_EXCEEDED) from anyone else's.
"""

from __future__ import annotations

import asyncio
import time

from smtpconfig.core.aio import stop_task

# How much later than its deadline a call may be ended: the sweeper sleeps at least this long, so
# that calls whose deadlines pass close together are ended in one wake-up.
SLACK = 0.01


class Deadlines:
    """The default deadline of every call of one server (one event loop)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Task -> when its deadline passes (time.monotonic()); insertion order is deadline order.
        self._due: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    def enter(self) -> asyncio.Task:
        """Put the current call under the default deadline; return its task, for `leave` and
        `expired`. (Two plain calls rather than a context manager: this runs on every call.)"""
        task = asyncio.current_task()
        assert task is not None
        if self._sweeper is None:
            self._start()
        self._due[task] = time.monotonic() + self.seconds
        return task

    def leave(self, task: asyncio.Task) -> None:
        """The call ended, or needs the deadline no longer (it answers from memory from here on)."""
        self._due.pop(task, None)
        if self._expired and task in self._expired:
            # Cancelled by the sweeper just as it left: the cancellation was never delivered.
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task) -> bool:
        """Whether the cancellation being handled is the sweeper's (the deadline passed), which
        is then taken back; a cancellation of anyone else's is not."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="default-deadlines")

    async def _sweep(self) -> None:
        while True:
            if not self._due:
                # Whatever enters from now on is due `seconds` from its entry at the earliest, so
                # the sweeper need not be woken for it: a call costs no wake-up of this task.
                await asyncio.sleep(max(self.seconds, SLACK))
                continue
            wait = next(iter(self._due.values())) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(max(wait, SLACK))
                continue
            now = time.monotonic()
            for task, due in list(self._due.items()):
                if due > now:
                    break
                del self._due[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()

    async def close(self) -> None:
        await stop_task(self._sweeper)
        self._sweeper = None
