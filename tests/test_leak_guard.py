"""The run-wide guard of `tests.kits.leaks`: a suite in which asyncio destroys a pending task
fails, naming the task and the test that was running, and the same suite without the leak
passes. Each runs as a pytest subprocess with only that plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITE = textwrap.dedent('''\
    import asyncio
    import gc

    LEAK = {leak}


    async def waits_for_ever() -> None:
        await asyncio.Event().wait()


    def test_a_loop_closed_under_a_waiting_task() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(waits_for_ever(), name="the-leaked-task")
        loop.run_until_complete(asyncio.sleep(0.01))  # the task now waits
        if not LEAK:
            task.cancel()
            loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()
        del task
        gc.collect()


    def test_after_it() -> None:
        pass
''')


def _run(tmp_path: Path, leak: bool) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / f"leak_{leak}" / "test_suite.py"
    suite.parent.mkdir()
    suite.write_text(SUITE.format(leak=leak))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.kits.leaks", "-p", "no:cacheprovider",
         "-p", "no:randomly", "--rootdir", str(suite.parent), str(suite)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_a_task_destroyed_while_pending_fails_the_run_naming_it(tmp_path: Path) -> None:
    leaked = _run(tmp_path, leak=True)
    assert leaked.returncode == 1, leaked.stdout + leaked.stderr
    assert "2 passed" in leaked.stdout  # every test passed: the run fails for the leak alone
    assert "asyncio destroyed 1 pending task(s)" in leaked.stdout
    line = next(line for line in leaked.stdout.splitlines() if line.startswith("during "))
    assert "test_a_loop_closed_under_a_waiting_task" in line and "the-leaked-task" in line
    clean = _run(tmp_path, leak=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "destroyed" not in clean.stdout
