"""Conformance kit for secret provider plugins: run smtpconfig's expectations against your provider.

Subclass `ProviderConformance` in your test suite and describe a working setup; pytest then runs
every check below against your real backend::

    from smtpconfig.plugin.testing import ProviderConformance

    class TestEnvProvider(ProviderConformance):
        provider_class = EnvProvider

        def initialization(self):
            return {"Prefix": "APP_"}

        def existing(self):
            os.environ["APP_SMTP"] = "value"
            return {"Variable": "SMTP"}, "value"

        def missing(self):
            return {"Variable": "NOT_THERE"}

`slow()` returns parameters for which the backend takes longer than the timeout, or None to opt
out of the timeout check explicitly (pytest then reports that check SKIPPED, with the reason);
`planted()` optionally lists more secret strings that must never leak (tokens of your backend).
Every check is also a plain function (`check_*`) for other test runners; only the class needs pytest.

What the schema check requires of the provider class, beyond what the host refuses at
registration (a `SecretProvider` subclass, a valid `name`, `resolve` implemented, no parameter name
used twice): a `description` on every parameter, no `default` on a required one, and at least one
instance parameter (`instance_level=True`), since that is how a secret object says which secret it
wants. docs/plugins.md lists the same under "Conformance kit".

PYTEST_DONT_REWRITE: every assertion here carries its own message, which never quotes a value;
pytest's assertion rewriting would print the compared texts, secrets among them.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from smtpconfig.plugin import (
    ParameterValue,
    ProviderError,
    Resolved,
    Secret,
    SecretNotFound,
    SecretProvider,
    values_for,
)
from smtpconfig.plugin.manager import check_provider_class

#: Parameters as a profile states them: text by name.
Given = Mapping[str, str]
#: Parameters as the host hands them to `resolve`: typed by kind (see `prepare_parameters`).
Params = Mapping[str, ParameterValue]


def prepare_initialization(cls: type[SecretProvider], given: Given) -> dict[str, ParameterValue]:
    """Initialization values as the service passes them: canonical names, read by their kinds
    (secret ones as `Secret`), defaults filled in. Raises BadParameters as the host would refuse."""
    return values_for(cls.parameters, given, instance_level=False)


def prepare_parameters(cls: type[SecretProvider], given: Given) -> dict[str, ParameterValue]:
    """Instance parameters as the service passes them: canonical names, typed, defaults filled in."""
    return values_for(cls.parameters, given, instance_level=True)


def resolve_as_host(provider: SecretProvider, instance_parameters: Given, initialization: Given | None = None) -> Resolved:
    """Resolve text parameters as the host does: each read by its kind (`prepare_parameters`,
    `prepare_initialization`), the rules across initialization values checked
    (`SecretProvider.check_initialization`), then `resolve` called as the service calls it: an
    ``async def resolve`` awaited, a plain one run on a worker thread, both given up on after
    `provider.timeout` with `TimeoutError` (the service answers UNAVAILABLE then). A value the
    host would refuse on write raises BadParameters naming it. A plain `resolve` that times out
    keeps running on its thread, as in the service. Call it from plain (not async) code: it runs
    its own event loop."""
    cls = type(provider)
    init = prepare_initialization(cls, initialization or {})
    cls.check_initialization(init)
    params = prepare_parameters(cls, instance_parameters)
    return asyncio.run(_resolve_within_timeout(provider, params, init))


_POOL: ThreadPoolExecutor | None = None


async def _resolve_within_timeout(
    provider: SecretProvider, params: Mapping[str, ParameterValue], init: Mapping[str, ParameterValue],
) -> Resolved:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(thread_name_prefix="provider")
    async with asyncio.timeout(provider.timeout):
        if inspect.iscoroutinefunction(provider.resolve):
            result = await provider.resolve(params, init)
        else:
            run = contextvars.copy_context().run
            result = await asyncio.get_running_loop().run_in_executor(_POOL, run, provider.resolve, params, init)
    return _as_resolved(result)


def call_resolve(
    provider: SecretProvider, params: Mapping[str, ParameterValue], init: Mapping[str, ParameterValue],
) -> Resolved:
    """Call `resolve` with prepared values (awaiting it if it is async) and normalise the result."""
    result: Any = provider.resolve(params, init)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return _as_resolved(result)


def _as_resolved(result: object) -> Resolved:
    """A bare `str` or `Secret` means `Resolved(value)`, as the service takes it."""
    if isinstance(result, str):
        result = Resolved(Secret(result))
    elif isinstance(result, Secret):
        result = Resolved(result)
    if not isinstance(result, Resolved):
        raise TypeError(f"resolve() returned {type(result).__name__}, not Resolved")
    return result


async def _await(awaitable):
    return await awaitable


def check_schema(cls: type[SecretProvider]) -> None:
    """The class registers (name, resolve, unique parameter names) and its parameters make sense."""
    check_provider_class(cls)
    for parameter in cls.parameters:
        assert not (parameter.required and parameter.default is not None), (
            f"{parameter.name}: a required parameter has no use for a default"
        )
        assert parameter.description, f"{parameter.name}: describe it; people configure it from this"
    assert any(p.instance_level for p in cls.parameters) or cls.name == "inline", (
        "no instance parameter: how does a secret object say which secret it wants?"
    )


def check_resolves(provider: SecretProvider, params: Params, init, expected: str) -> Resolved:
    resolved = call_resolve(provider, params, init)
    assert resolved.value == Secret(expected), "resolve() returned another value than expected"
    return resolved


def check_not_found(provider: SecretProvider, params: Params, init) -> SecretNotFound:
    try:
        call_resolve(provider, params, init)
    except SecretNotFound as error:
        return error
    except Exception as error:  # noqa: BLE001 - reported below
        raise AssertionError(f"a missing secret raised {type(error).__name__}, not SecretNotFound") from error
    raise AssertionError("a missing secret resolved instead of raising SecretNotFound")


def check_missing_parameters(provider: SecretProvider, params: Params, init) -> None:
    """Leaving out a required instance parameter raises a ProviderError (BadParameters, ideally),
    never a KeyError or TypeError from inside the provider."""
    for parameter in [p for p in type(provider).parameters if p.instance_level and p.required]:
        partial = {k: v for k, v in params.items() if k != parameter.name}
        try:
            call_resolve(provider, partial, init)
        except ProviderError:
            continue
        except Exception as error:  # noqa: BLE001
            raise AssertionError(
                f"without {parameter.name}, resolve() raised {type(error).__name__}; raise BadParameters"
            ) from error
        raise AssertionError(f"without the required {parameter.name}, resolve() still returned a value")


def check_no_leaks(provider: SecretProvider, secrets: list[str], *errors: BaseException) -> None:
    """No secret in repr/str of the provider or of the errors it raised."""
    texts = [repr(provider), str(provider)]
    for error in errors:
        texts += [str(error), repr(error), str(getattr(error, "args", ""))]
    for secret in filter(None, secrets):
        for text in texts:
            assert secret not in text, "a secret value appears in a repr or an error message"


def check_timeout(provider: SecretProvider, params: Params, init, timeout: float) -> None:
    """With the backend slower than the timeout, resolve() gives up within about the timeout."""
    started = time.monotonic()
    try:
        call_resolve(provider, params, init)
    except ProviderError:
        pass
    took = time.monotonic() - started
    assert took <= timeout + 1.5, f"resolve() took {took:.1f}s with a timeout of {timeout:g}s"


def check_concurrent(provider: SecretProvider, params: Params, init, expected: str, calls: int = 32) -> None:
    with ThreadPoolExecutor(max_workers=calls) as pool:
        results = list(pool.map(lambda _: call_resolve(provider, params, init), range(calls)))
    assert all(r.value == Secret(expected) for r in results), "concurrent calls returned other values"


class ProviderConformance:
    """Base class for a pytest test class; see the module docstring."""

    provider_class: type[SecretProvider]
    timeout: float = 2.0

    # -- what the subclass describes --
    def initialization(self) -> Mapping[str, str]:
        """Initialization values of a working instance (plain strings, secret ones included)."""
        raise NotImplementedError

    def existing(self) -> tuple[Given, str]:
        """Instance parameters of a secret that exists, and its exact value."""
        raise NotImplementedError

    def missing(self) -> Given:
        """Instance parameters of a secret that does not exist."""
        raise NotImplementedError

    def slow(self) -> Given | None:
        """Instance parameters for which the backend answers after more than `timeout`; return
        None to state that your backend cannot be made slow in a test (the check is then off)."""
        raise NotImplementedError("describe slow() or return None from it to opt out explicitly")

    def planted(self) -> list[str]:
        """Other secret strings (backend tokens) that must never appear in reprs or errors."""
        return []

    # -- plumbing --
    def _provider(self) -> SecretProvider:
        return self.provider_class(timeout=self.timeout)

    def _init(self):
        values = prepare_initialization(self.provider_class, self.initialization())
        self.provider_class.check_initialization(values)  # the host refuses what this refuses
        return values

    def _secrets(self, value: str) -> list[str]:
        secret_names = {p.name for p in self.provider_class.parameters if p.data_type == "secret"}
        init = self._init()
        return [value, *self.planted(), *(init[n].reveal() for n in secret_names if n in init)]

    # -- the checks --
    def test_schema(self) -> None:
        check_schema(self.provider_class)

    def test_resolves_an_existing_secret(self) -> None:
        params, value = self.existing()
        provider = self._provider()
        try:
            resolved = check_resolves(provider, prepare_parameters(self.provider_class, params), self._init(), value)
            assert resolved.ttl is None or resolved.ttl >= 0
        finally:
            provider.close()

    def test_missing_secret_is_not_found(self) -> None:
        provider = self._provider()
        try:
            check_not_found(provider, prepare_parameters(self.provider_class, self.missing()), self._init())
        finally:
            provider.close()

    def test_missing_required_parameters_are_reported(self) -> None:
        params, _ = self.existing()
        provider = self._provider()
        try:
            check_missing_parameters(provider, prepare_parameters(self.provider_class, params), self._init())
        finally:
            provider.close()

    def test_secrets_never_in_reprs_or_errors(self) -> None:
        params, value = self.existing()
        provider = self._provider()
        try:
            resolved = call_resolve(provider, prepare_parameters(self.provider_class, params), self._init())
            error = check_not_found(provider, prepare_parameters(self.provider_class, self.missing()), self._init())
            check_no_leaks(provider, self._secrets(value), error)
            assert value not in repr(resolved) and value not in str(resolved)
        finally:
            provider.close()

    def test_timeout_is_honoured(self) -> None:
        slow = self.slow()
        if slow is None:
            import pytest  # here only: the check functions serve other test runners without it

            pytest.skip("slow() returned None: the provider opted out of the timeout check")
        provider = self._provider()
        try:
            check_timeout(provider, prepare_parameters(self.provider_class, slow), self._init(), self.timeout)
        finally:
            provider.close()

    def test_safe_under_concurrent_calls(self) -> None:
        params, value = self.existing()
        provider = self._provider()
        try:
            check_concurrent(provider, prepare_parameters(self.provider_class, params), self._init(), value)
        finally:
            provider.close()


__all__ = [
    "ProviderConformance",
    "call_resolve",
    "check_concurrent",
    "check_missing_parameters",
    "check_no_leaks",
    "check_not_found",
    "check_resolves",
    "check_schema",
    "check_timeout",
    "prepare_initialization",
    "prepare_parameters",
    "resolve_as_host",
]
