"""The resolution engine: turns a secret source into its value at apply time.

- Results are cached per reference (instance, its revision, parameters) for the provider's TTL,
  never longer than a lease the backend gave.
- Concurrent resolutions of one reference share one backend call.
- Failures are remembered briefly (`failure_ttl`), so a broken reference cannot hammer a backend.
- `flush` drops cached values and failures on demand (after a rotation), and detaches calls in
  flight for them, so nothing read before the flush is handed out or cached after it.
- `resolve(..., refresh=True)` does the same for one reference: its cached value (or failure) is
  dropped and a call in flight detached, so the caller gets a fresh read; callers that come while
  that read runs share it.
- Every backend call has a timeout. Blocking `resolve` methods run on a dedicated thread pool, so
  they never block the event loop, and a hung backend cannot take the threads of other work.
- Metrics: every provider call (type, outcome, latency, error class) and every cache lookup. A
  resolution that joins a call already in flight counts as a cache hit, so misses equal the number
  of backend calls. Each fetched value is handed to the log redactor.
- A provider's error message carries its backend's words (an HTTP body, a command's stderr), which
  may echo the instance's secret initialization values: it is scrubbed of them, made one line and
  capped here, for every provider type, before callers, logs or the audit trail see it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from smtpconfig.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, SmtpConfigError, Unavailable
from smtpconfig.core.scrub import Scrubber
from smtpconfig.core.secret import Secret
from smtpconfig.domain.catalog import ProviderTypes
from smtpconfig.domain.model import InlineSecret, ProviderRef, SecretSource
from smtpconfig.domain.providers import ProviderInstance
from smtpconfig.ops.logs import remember_secret
from smtpconfig.ops.metrics import NO_METRICS, AnyMetrics
from smtpconfig.plugin import (
    AccessDenied,
    BadParameters,
    ParameterValue,
    ProviderError,
    ProviderUnavailable,
    Resolved,
    SecretNotFound,
    SecretProvider,
    values_for,
)

log = logging.getLogger(__name__)

# (instance id, instance etag, sorted instance parameters): one cached reference.
_CacheKey = tuple[int, str, tuple[tuple[str, str], ...]]
MAX_ENTRIES = 1024  # distinct references cached; CheckSecret callers can name arbitrary ones
MAX_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Resolution:
    """A resolved secret and how it was obtained. `value` is the only secret field."""

    value: Secret
    provider_id: int | None  # None for inline values
    provider_type: str
    provider_name: str
    latency: float  # seconds this call took, cache hits included
    cached: bool
    expires_in: float  # seconds the value stays cached (inf for inline)
    version: str | None = None
    fingerprint: str = ""  # keyed fingerprint, computed once per fetched value; "" for inline


class Flushed(NamedTuple):
    """What `Resolver.flush` dropped that was still in force."""

    values: int
    failures: int


@dataclass
class _Entry:
    expires: float
    resolved: Resolved | None = None
    error: SmtpConfigError | None = None
    fingerprint: str = ""


class Instances(Protocol):
    """The provider instances a resolver reads through
    (`smtpconfig.domain.provider_service.ProviderService` in a running server)."""

    def find(self, provider_id: int) -> ProviderInstance | None: ...

    def values(self, instance: ProviderInstance) -> Mapping[str, ParameterValue]:
        """The typed initialization values its provider receives."""
        ...

    def check_reach(self, instance: ProviderInstance) -> None:
        """Raise when the instance may not be used on this host now."""
        ...

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call `listener(provider_id)` whenever an instance changes or goes away."""
        ...


class Resolver:
    """Resolves secret sources through provider instances."""

    def __init__(
        self,
        providers: Instances,
        plugins: ProviderTypes,
        *,
        timeout: float = 10.0,
        failure_ttl: float = 5.0,
        workers: int = 32,
        fingerprint: Callable[[Secret], str] = lambda value: "",
        metrics: AnyMetrics = NO_METRICS,
    ) -> None:
        self._providers = providers
        self._metrics = metrics
        self._fingerprint = fingerprint
        self._plugins = plugins
        self._timeout = timeout
        self._failure_ttl = failure_ttl
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provider")
        self._cache: OrderedDict[_CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[_CacheKey, asyncio.Task[_Entry]] = {}
        self._objects: dict[tuple[int, str], SecretProvider] = {}
        # Bumped whenever what `resolve` hands out for a reference may change: a value or failure
        # cached or dropped, a flush, a refresh, an instance changed. While it holds still (and
        # nothing read has expired), resolving the same references again gives the same values,
        # which lets a caller keep what it resolved (`smtpconfig.outbound.apply.Applier`).
        self.generation = 0
        inline = plugins.provider_type("inline")
        self._inline = inline.cls(timeout=timeout) if inline is not None else None
        providers.on_change(self.forget)

    def fingerprint(self, resolution: Resolution) -> str:
        """The keyed fingerprint of a resolved value (computed on demand for inline values)."""
        return resolution.fingerprint or self._fingerprint(resolution.value)

    def forget(self, provider_id: int) -> None:
        """Drop what is cached for an instance that changed or went away, and close its object."""
        self.generation += 1
        for key in [k for k in self._cache if k[0] == provider_id]:
            del self._cache[key]
        for object_key in [k for k in self._objects if k[0] == provider_id]:
            self._close(self._objects.pop(object_key))

    def flush(self, provider_id: int | None = None, parameters: dict[str, str] | None = None) -> Flushed:
        """Drop what is cached for every instance, one instance, or one of its references (its
        canonical `parameters`). Calls in flight for them are left to finish for their callers,
        but new callers start a fresh call and what the old one read is not cached."""

        wanted = None if parameters is None else tuple(sorted(parameters.items()))
        self.generation += 1

        def matches(key: Any) -> bool:  # (instance id, its etag, sorted parameters), as `resolve` makes it
            return (provider_id is None or key[0] == provider_id) and (wanted is None or key[2] == wanted)

        now = time.monotonic()
        dropped = [self._cache.pop(key) for key in [k for k in self._cache if matches(k)]]
        for key in [k for k in self._inflight if matches(k)]:
            del self._inflight[key]
        live = [entry for entry in dropped if entry.expires > now]
        flushed = Flushed(sum(e.error is None for e in live), sum(e.error is not None for e in live))
        log.info("secret cache flushed (%s): %d values and %d failures dropped",
                 "every instance" if provider_id is None else f"provider {provider_id}", *flushed)
        return flushed

    async def close(self) -> None:
        self.generation += 1
        for provider in self._objects.values():
            self._close(provider)
        self._objects.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _close(provider: SecretProvider) -> None:
        try:
            provider.close()
        except Exception as error:  # noqa: BLE001 - closing must not fail a request
            log.warning("closing provider %s failed: %s", provider.name, type(error).__name__)

    async def resolve(self, source: SecretSource, *, refresh: bool = False) -> Resolution:
        """The value of `source`; `refresh` bypasses the cache and any call already in flight."""
        started = time.monotonic()
        if isinstance(source, InlineSecret):
            # Through the inline provider like any other type; it only hands back the value.
            value = source.value
            if self._inline is not None:
                value = _as_resolved(self._inline.resolve({}, {"SecretValue": value})).value
            remember_secret(value.reveal())
            elapsed = time.monotonic() - started
            self._metrics.provider_call("inline", "ok", elapsed)
            return Resolution(value, None, "inline", "inline", elapsed, False, math.inf)
        instance = self._providers.find(source.provider)
        if instance is None:
            raise FailedPrecondition(f"no secret provider instance has Id {source.provider}")
        key = (instance.id, instance.etag, tuple(sorted(source.parameters.items())))
        if refresh:
            # A call in flight may have started before the rotation the caller knows of: detach
            # it, as `flush` does, so the fresh call is the one new callers join and the cache keeps.
            self._cache.pop(key, None)
            self._inflight.pop(key, None)
            self.generation += 1
        now = time.monotonic()
        entry = self._cache.get(key)
        cached = entry is not None and entry.expires > now
        if cached:
            self._metrics.cache(hit=True)
        else:
            entry = await self._shared_call(key, instance, source)
        assert entry is not None
        if entry.error is not None:
            raise entry.error
        assert entry.resolved is not None
        return Resolution(
            entry.resolved.value, instance.id, instance.type_name, instance.name,
            time.monotonic() - started, cached, max(0.0, entry.expires - time.monotonic()), entry.resolved.version,
            entry.fingerprint,
        )

    async def _shared_call(self, key: _CacheKey, instance: ProviderInstance, ref: ProviderRef) -> _Entry:
        """Join the call in flight for `key`, or start it. The call runs as its own task, so a
        caller that gives up (deadline, cancellation) does not cancel it for the others."""
        task = self._inflight.get(key)
        self._metrics.cache(hit=task is not None)
        if task is None:
            task = asyncio.create_task(self._call(instance, ref), name=f"resolve-{instance.id}")
            self._inflight[key] = task

            def done(finished: asyncio.Task, key: _CacheKey = key) -> None:
                if self._inflight.get(key) is not finished:
                    return  # detached by `flush`: what it read may be what was flushed
                del self._inflight[key]
                if not finished.cancelled():
                    self._remember(key, finished.result())

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def reused(self, *sources: SecretSource) -> None:
        """Count the resolutions of `sources` that a caller answered from what it kept of earlier
        ones (see `generation`) as `resolve` would have counted them: a cache hit for a
        reference, a call of the inline provider for an inline value."""
        for source in sources:
            if source.__class__ is InlineSecret:
                self._metrics.provider_call("inline", "ok", 0.0)
            else:
                self._metrics.cache(hit=True)

    def _remember(self, key: _CacheKey, entry: _Entry) -> None:
        self.generation += 1
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)

    def _provider(self, instance: ProviderInstance) -> SecretProvider:
        key = (instance.id, instance.etag)
        provider = self._objects.get(key)
        if provider is None:
            info = self._plugins.provider_type(instance.type_name)
            if info is None:
                raise FailedPrecondition(
                    f"provider instance {instance.id} ({instance.name}) needs provider type"
                    f" {instance.type_name!r}, which is not installed"
                )
            provider = self._objects[key] = info.cls(timeout=self._timeout)
        return provider

    async def _call(self, instance: ProviderInstance, ref: ProviderRef) -> _Entry:
        """One backend call, turned into a cache entry (value or error), and measured."""
        started = time.monotonic()
        try:
            self._providers.check_reach(instance)
            provider = self._provider(instance)
            resolved = await self._backend(provider, instance, ref)
        except Exception as error:  # noqa: BLE001 - each kind is mapped by _domain_error
            self._metrics.provider_call(instance.type_name, "error", time.monotonic() - started, _error_kind(error))
            return _Entry(started + self._failure_ttl, error=self._domain_error(error, instance, ref))
        self._metrics.provider_call(instance.type_name, "ok", time.monotonic() - started)
        remember_secret(resolved.value.reveal())
        default = provider.default_ttl
        ttl = min(resolved.ttl if resolved.ttl is not None else default, MAX_TTL)
        return _Entry(time.monotonic() + ttl, resolved=resolved, fingerprint=self._fingerprint(resolved.value))

    async def _backend(self, provider: SecretProvider, instance: ProviderInstance, ref: ProviderRef) -> Resolved:
        # Typed as the plugin API promises; the reference was read by the same kinds when written.
        params = values_for(provider.parameters, ref.parameters, instance_level=True)
        init = self._providers.values(instance)
        # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancel that
        # lands as the call completes, and a resolver being closed must stop.
        async with asyncio.timeout(self._timeout):
            if inspect.iscoroutinefunction(provider.resolve):
                result = await provider.resolve(params, init)
            else:
                # In the caller's context, so lines a provider logs carry the call's request id.
                run = contextvars.copy_context().run
                result = await asyncio.get_running_loop().run_in_executor(self._pool, run, provider.resolve, params, init)
        return _as_resolved(result)

    def _domain_error(self, error: Exception, instance: ProviderInstance, ref: ProviderRef) -> SmtpConfigError:
        """What callers are told about a failed provider call."""
        where = f"provider {instance.id} ({instance.name}, {instance.type_name})"
        reference = ", ".join(f"{k}={v}" for k, v in sorted(ref.parameters.items()))
        if isinstance(error, _PUBLIC_ERRORS):
            error = _scrubbed(error, instance)
        if isinstance(error, asyncio.TimeoutError):
            return Unavailable(f"{where} did not answer within {self._timeout:g}s")
        if isinstance(error, SecretNotFound):
            return FailedPrecondition(f"{where} has no secret for {{{reference}}}: {error}")
        if isinstance(error, AccessDenied):
            return FailedPrecondition(f"{where} was denied access for {{{reference}}}: {error}")
        if isinstance(error, ProviderUnavailable):
            return Unavailable(f"{where} is unavailable: {error}")
        if isinstance(error, BadParameters):
            return self._bad_parameters(error, instance, where)
        if isinstance(error, SmtpConfigError):
            return error
        _log_plugin_bug(error, where, reference, instance)
        return Unavailable(
            f"{where} failed ({type(error).__name__}), a bug in the provider: the server log has the"
            " message, and its traceback at log_level debug"
        )

    def _bad_parameters(self, error: BadParameters, instance: ProviderInstance, where: str) -> SmtpConfigError:
        """INVALID_ARGUMENT only for a parameter of the reference, which its caller (or the
        profile's author) wrote. An initialization parameter, or none named, is the instance's
        own setting: the caller cannot fix it, the operator must."""
        info = self._plugins.provider_type(instance.type_name)
        names = {p.name for p in info.cls.parameters if p.instance_level} if info is not None else set()
        if error.parameter in names:
            return InvalidArgument([FieldViolation(f"Parameters.{error.parameter}", f"{where}: {error}")])
        which = f"initialization parameter {error.parameter}" if error.parameter else "initialization parameters"
        return FailedPrecondition(f"{where} cannot be used as configured (check its {which}): {error}")


_PUBLIC_ERRORS = (SecretNotFound, AccessDenied, ProviderUnavailable, BadParameters)


def _scrubbed(error: ProviderError, instance: ProviderInstance) -> ProviderError:
    """`error` as the plugin API class it is (a plugin's subclass included), its message cleaned
    of the instance's secret initialization values."""
    secrets = [value for value in instance.initialization.values() if isinstance(value, Secret)]
    message = Scrubber(*secrets).clean(str(error))
    if isinstance(error, BadParameters):
        return BadParameters(message, error.parameter)
    cls = next(c for c in _PUBLIC_ERRORS if isinstance(error, c))
    return cls(message)


def _log_plugin_bug(error: Exception, where: str, reference: str, instance: ProviderInstance) -> None:
    """A plugin bug, for its author: the exception's message and, at debug, its traceback, both
    without the instance's secret initialization values (the log redactor then masks every value
    resolved so far). Callers get only the exception's type: its text could hold anything."""
    scrubber = Scrubber(*(value for value in instance.initialization.values() if isinstance(value, Secret)))
    log.error("%s raised %s while resolving {%s}: %s", where, type(error).__name__, reference, scrubber.clean(error))
    if log.isEnabledFor(logging.DEBUG):
        lines = traceback.format_exception(error)
        shown = "\n".join(_indent(line) + scrubber.clean(line) for chunk in lines for line in chunk.splitlines())
        log.debug("traceback of that %s (secret initialization values masked):\n%s", type(error).__name__, shown)


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" "))]


def _error_kind(error: Exception) -> str:
    """The metrics label for a failed call: the plugin API's error class (a plugin's own subclass
    of one counts as it), ``Timeout``, or the class name of anything else."""
    if isinstance(error, asyncio.TimeoutError):
        return "Timeout"
    for cls in _PUBLIC_ERRORS:
        if isinstance(error, cls):
            return cls.__name__
    return type(error).__name__


def _as_resolved(result: object) -> Resolved:
    if isinstance(result, Resolved):
        return result
    if isinstance(result, Secret):
        return Resolved(result)
    if isinstance(result, str):
        return Resolved(Secret(result))
    raise TypeError(f"resolve() returned {type(result).__name__}, not Resolved")
