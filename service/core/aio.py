"""asyncio helpers every layer may use: the event loops `smtpconfig serve` can run on (the
`event_loop` setting), made by name, and stopping a background task."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# The event loops `serve` can run on: libuv's (uvloop, fewer microseconds of CPU per call) and the
# standard library's.
EVENT_LOOPS = ("uvloop", "asyncio")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def default_event_loop() -> str:
    """uvloop where it is installed (a dependency everywhere but Windows), else asyncio's."""
    return "uvloop" if uvloop_installed() else "asyncio"


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind `name` (one of `EVENT_LOOPS`) names."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run `main` to its end on a new event loop of the kind `loop` names, as `asyncio.run` does on
    the standard library's."""
    with asyncio.Runner(loop_factory=functools.partial(new_event_loop, loop)) as runner:
        return runner.run(main)


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel `task` (if any) and wait until it has ended; its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
