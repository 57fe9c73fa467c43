"""The default deadline's sweeper (`smtpconfig.api.deadlines`) on its own: it ends the calls past
their deadline and only those, and tells its own cancellation from anyone else's."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtpconfig.api.deadlines import Deadlines
from smtpconfig.core.aio import new_event_loop


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request):
    """Runs a scenario on each event loop `serve` can run on (the sweeper cancels and uncancels tasks)."""

    def run(main):
        with asyncio.Runner(loop_factory=lambda: new_event_loop(request.param)) as runner:
            return runner.run(main)

    return run


async def _call(deadlines: Deadlines, work: float) -> str:
    """A call under the default deadline that works (waits) `work` seconds."""
    task = deadlines.enter()
    try:
        await asyncio.sleep(work)
        return "answered"
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        return "expired"
    finally:
        deadlines.leave(task)


def test_only_the_calls_past_the_deadline_are_ended_and_on_time(run) -> None:
    async def scenario() -> tuple[list[str], float]:
        deadlines = Deadlines(0.3)
        started = time.monotonic()
        outcomes = await asyncio.gather(_call(deadlines, 0.05), _call(deadlines, 1.0), _call(deadlines, 0.2),
                                        _call(deadlines, 5.0))
        elapsed = time.monotonic() - started
        await deadlines.close()
        return outcomes, elapsed

    outcomes, elapsed = run(scenario())
    assert outcomes == ["answered", "expired", "answered", "expired"]
    assert 0.3 <= elapsed < 0.6, elapsed


def test_a_call_that_left_is_not_ended_and_a_cancellation_of_anyone_else_stays_one(run) -> None:
    async def scenario() -> None:
        deadlines = Deadlines(0.2)
        task = deadlines.enter()
        deadlines.leave(task)  # answered from memory from here on
        await asyncio.sleep(0.4)  # well past the deadline: nothing cancels this task

        other = asyncio.create_task(_call(deadlines, 5.0))
        await asyncio.sleep(0.05)
        other.cancel()  # the caller went away: not the deadline
        with pytest.raises(asyncio.CancelledError):
            await other

        # After a quiet spell (the sweeper asleep for a whole deadline) a new call is still ended.
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert await _call(deadlines, 5.0) == "expired"
        assert time.monotonic() - started < 0.45
        await deadlines.close()

    run(scenario())
