"""smtpconfig's pytest plugin (smtpconfig.plugin.pytest_plugin): registered in the installed
metadata under `pytest11`, loaded by pytest with no import, and its `resolve_like_host` fixture
calls providers as the service does. The fixture is exercised the way a plugin author meets it: a
suite of their own in a temporary directory, run by a pytest subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from smtpconfig.plugin import pytest_plugin
from tests.kits.pluginkit import GUIDE, write_guide_files

AUTHOR_SUITE = textwrap.dedent('''\
    import asyncio
    import contextvars
    import threading
    import time

    import pytest

    from smtpconfig.plugin import BadParameters, Parameter, Resolved, Secret, SecretNotFound, SecretProvider

    CALLER = contextvars.ContextVar("caller", default="unset")


    class Threaded(SecretProvider):
        name = "threaded"
        parameters = (
            Parameter("Name", instance_level=True, aliases=("Key",), description="which secret"),
            Parameter("Suffix", instance_level=True, required=False, default="!", description="appended"),
            Parameter("Token", kind="secret", description="the backend's token"),
            Parameter("Retries", kind="int", required=False, default="3", description="how often to try"),
        )

        @classmethod
        def check_initialization(cls, initialization):
            if initialization["Retries"] == 0:
                raise BadParameters("at least one try", parameter="Retries")

        def resolve(self, instance_parameters, initialization):
            name = instance_parameters["Name"]
            if name == "slow":
                time.sleep(2)
            if name == "missing":
                raise SecretNotFound("no such secret")
            if name == "bad":
                return 42
            assert isinstance(initialization["Token"], Secret)
            worker = threading.current_thread() is not threading.main_thread()
            retries = initialization["Retries"]
            return f"{name}{instance_parameters['Suffix']} retries={retries!r} worker={worker} caller={CALLER.get()}"


    class Awaited(SecretProvider):
        name = "awaited"
        parameters = (Parameter("Name", instance_level=True, description="which secret"),)

        async def resolve(self, instance_parameters, initialization):
            if instance_parameters["Name"] == "slow":
                await asyncio.sleep(30)
            return Resolved(Secret("async " + instance_parameters["Name"]), ttl=5)


    def test_a_plain_resolve_runs_on_a_worker_in_the_callers_context_with_values_as_the_host_passes_them(
            resolve_like_host):
        CALLER.set("the test")
        resolved = resolve_like_host(Threaded(timeout=1.0), {"Key": "smtp"}, {"Token": "t0k"})
        assert resolved == Resolved(Secret("smtp! retries=3 worker=True caller=the test"))


    @pytest.mark.parametrize("retries", ["many", "0"])
    def test_values_the_host_would_refuse_are_refused_before_resolve(resolve_like_host, retries):
        with pytest.raises(BadParameters) as refused:
            resolve_like_host(Threaded(timeout=1.0), {"Name": "smtp"}, {"Token": "t0k", "Retries": retries})
        assert refused.value.parameter == "Retries"


    def test_an_async_resolve_is_awaited_and_its_result_kept(resolve_like_host):
        resolved = resolve_like_host(Awaited(timeout=1.0), {"Name": "smtp"})
        assert resolved.value == Secret("async smtp") and resolved.ttl == 5


    @pytest.mark.parametrize("provider", [Threaded, Awaited])
    def test_a_resolve_slower_than_the_timeout_is_given_up_on_in_time(resolve_like_host, provider):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            resolve_like_host(provider(timeout=0.3), {"Name": "slow"}, {"Token": "t0k"} if provider is Threaded else {})
        assert time.monotonic() - started < 1.0


    def test_errors_of_the_provider_reach_the_test(resolve_like_host):
        with pytest.raises(SecretNotFound):
            resolve_like_host(Threaded(timeout=1.0), {"Name": "missing"}, {"Token": "t0k"})


    def test_a_result_that_is_no_secret_is_a_type_error(resolve_like_host):
        with pytest.raises(TypeError, match="returned int, not Resolved"):
            resolve_like_host(Threaded(timeout=1.0), {"Name": "bad"}, {"Token": "t0k"})
''')


def _run_pytest(where: Path, *flags: str) -> subprocess.CompletedProcess:
    """pytest as the author runs it: only what the environment installed, no options from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *flags],
                          cwd=where, env=env, capture_output=True, text=True, timeout=120)


def test_the_entry_point_is_in_the_installed_metadata_and_loaded_here(pytestconfig: pytest.Config) -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "smtpconfig"]
    assert len(found) == 1, found
    assert found[0].value == "smtpconfig.plugin.pytest_plugin"
    assert found[0].dist is not None and found[0].dist.name == "smtpconfig"
    assert found[0].load() is pytest_plugin
    assert pytestconfig.pluginmanager.get_plugin("smtpconfig") is pytest_plugin


def test_an_authors_suite_gets_resolve_like_host_through_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_author.py").write_text(AUTHOR_SUITE)
    run = _run_pytest(tmp_path, "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "8 passed" in run.stdout, run.stdout

    # Without the entry point's plugin the fixture is not there: nothing else offered it.
    off = _run_pytest(tmp_path, "-q", "-p", "no:smtpconfig")
    assert off.returncode == 1, off.stdout + off.stderr
    assert "fixture 'resolve_like_host' not found" in off.stdout, off.stdout


def test_the_guides_example_of_the_fixture_passes_on_the_guides_provider(tmp_path: Path) -> None:
    example = re.search(r"```python\n(def test_\w+\(resolve_like_host.*?)```", GUIDE.read_text(), re.S)
    assert example is not None, "docs/plugins.md shows resolve_like_host in a test"
    write_guide_files(tmp_path)
    author = tmp_path / "smtpconfig-env-provider"
    (author / "test_env_provider.py").unlink()  # the conformance kit's run is test_docs' business
    (author / "test_fixture_example.py").write_text("from smtpconfig_env import EnvProvider\n\n\n" + example.group(1))
    run = _run_pytest(author, "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout, run.stdout
