"""smtpconfig's pytest plugin, for the test suites of secret provider plugins.

Registered under the `pytest11` entry point as `smtpconfig`, so pytest loads it wherever smtpconfig
is installed (``-p no:smtpconfig`` turns it off) and a suite uses its fixture by naming it, with
no import. Importing this module only defines the fixture.

`resolve_like_host` calls a provider's `resolve` the way the service does, which the conformance
kit's `resolve_as_host` does only in part: values read by their kinds, by canonical name, with
defaults filled in and the rules across initialization values checked (as `resolve_as_host` does);
then an `async def resolve` awaited on an event loop and a plain one run on a worker thread, both
given up on after the provider's `timeout`; and the result made a `Resolved`::

    def test_reads_the_variable(resolve_like_host):
        resolved = resolve_like_host(EnvProvider(timeout=2.0), {"Variable": "SMTP"}, {"Prefix": "APP_"})
        assert resolved.value.reveal() == "value"

A call slower than the timeout raises `TimeoutError` (the service answers UNAVAILABLE); a plain
`resolve` keeps running on its thread, as it does in the service, so keep backend timeouts at or
below the provider's. Call it from plain (not async) tests: it runs its own event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from smtpconfig.plugin import ParameterValue, Resolved, Secret, SecretProvider
from smtpconfig.plugin.testing import prepare_initialization, prepare_parameters


class HostCall:
    """What `resolve_like_host` returns: call it as
    ``(provider, instance_parameters, initialization=None) -> Resolved``."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool

    def __call__(
        self,
        provider: SecretProvider,
        instance_parameters: Mapping[str, str],
        initialization: Mapping[str, str] | None = None,
    ) -> Resolved:
        cls = type(provider)
        init = prepare_initialization(cls, initialization or {})
        cls.check_initialization(init)
        params = prepare_parameters(cls, instance_parameters)
        return asyncio.run(self._resolve(provider, params, init))

    async def _resolve(
        self, provider: SecretProvider, params: Mapping[str, ParameterValue], init: Mapping[str, ParameterValue],
    ) -> Resolved:
        async with asyncio.timeout(provider.timeout):
            if inspect.iscoroutinefunction(provider.resolve):
                result = await provider.resolve(params, init)
            else:
                run = contextvars.copy_context().run
                result = await asyncio.get_running_loop().run_in_executor(self._pool, run, provider.resolve, params, init)
        return _as_resolved(result)


def _as_resolved(result: object) -> Resolved:
    """A bare `str` or `Secret` means `Resolved(value)`; anything else is a provider bug."""
    if isinstance(result, Resolved):
        return result
    if isinstance(result, Secret):
        return Resolved(result)
    if isinstance(result, str):
        return Resolved(Secret(result))
    raise TypeError(f"resolve() returned {type(result).__name__}, not Resolved")


@pytest.fixture
def resolve_like_host() -> Iterator[HostCall]:
    """Call a provider's `resolve` as the service does: async or on a worker thread, within the
    provider's timeout, values prepared and the result normalised (see smtpconfig.plugin.pytest_plugin)."""
    pool = ThreadPoolExecutor(thread_name_prefix="provider")
    try:
        yield HostCall(pool)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung resolve is left behind, as the service leaves it
