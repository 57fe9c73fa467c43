"""smtpconfig's pytest plugin, for the test suites of secret provider plugins.

Registered under the `pytest11` entry point as `smtpconfig`, so pytest loads it wherever smtpconfig
is installed (``-p no:smtpconfig`` turns it off) and a suite uses its fixture by naming it, with
no import. Importing this module only defines the fixture.

`resolve_like_host` is the conformance kit's `smtpconfig.plugin.testing.resolve_as_host`: it calls a
provider's `resolve` the way the service does (values read by their kinds, defaults filled in, the
rules across initialization values checked, an ``async def resolve`` awaited and a plain one run on
a worker thread, both given up on after the provider's `timeout`)::

    def test_reads_the_variable(resolve_like_host):
        resolved = resolve_like_host(EnvProvider(timeout=2.0), {"Variable": "SMTP"}, {"Prefix": "APP_"})
        assert resolved.value.reveal() == "value"

Call it from plain (not async) tests: it runs its own event loop.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtpconfig.plugin import Resolved
from smtpconfig.plugin.testing import resolve_as_host


@pytest.fixture
def resolve_like_host() -> Callable[..., Resolved]:
    """``(provider, instance_parameters, initialization=None) -> Resolved``, as the service resolves
    (see smtpconfig.plugin.pytest_plugin)."""
    return resolve_as_host
