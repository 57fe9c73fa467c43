"""Loading plugins: the only module (with the API's markers) that talks to pluggy.

`load_plugins` builds a plugin manager in a factory (importing this module does nothing), registers
the first-party plugins and every entry point of group ``smtpconfig`` through the same call, and
returns `Plugins`, a typed facade: the rest of the service never touches ``pm.hook``.

A plugin that fails to import or to register is reported and skipped; with ``strict`` it is fatal,
after every plugin was tried, so one start names every failure. The blocklist applies to every
plugin; the allowlist, when set, to third-party ones only. A name in either list that no installed
plugin has is a warning naming the closest installed one: a typo there would otherwise silently
keep a plugin out (allow) or let one in (block).

Entry points are read once, at start. `Plugins.changed_since_start` reads them again, so a report
can say what a restart would change (a plugin installed, upgraded or removed since).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, entry_points, version
from types import ModuleType

import pluggy

from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.core.scrub import plain
from smtpconfig.ops.logs import redact
from smtpconfig.plugin import PROJECT, SecretProvider, hookspecs

log = logging.getLogger(__name__)

# First-party plugins: module paths, registered exactly like third-party entry points.
BUILTINS: dict[str, str] = {
    "inline": "smtpconfig.providers.inline",
    "vault": "smtpconfig.providers.vault",
    "exec": "smtpconfig.providers.exec",
}

_TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class PluginError(FailedPrecondition):
    """A plugin could not be loaded and strict mode is on."""


@dataclass
class PluginStatus:
    """What `smtpconfig plugins` reports for one plugin."""

    name: str
    source: str  # "builtin" or "entry point"
    module: str
    version: str = ""
    status: str = "loaded"  # loaded, failed, blocked, not allowed; "not loaded": installed since start
    error: str = ""
    provider_types: list[str] = field(default_factory=list)
    #: Why a restart of this process would change this plugin ("" when it would not).
    restart: str = ""


@dataclass(frozen=True)
class ProviderTypeInfo:
    """A registered provider type and the plugin it came from."""

    cls: type[SecretProvider]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.name


class Plugins:
    """The loaded plugins: provider types by name, a report of every plugin seen, the warnings
    about the settings that chose them, and whether a failure was fatal (`strict`)."""

    def __init__(
        self, types: dict[str, ProviderTypeInfo], report: list[PluginStatus],
        warnings: list[str] | None = None, strict: bool = False,
    ) -> None:
        self.provider_types = types
        self.report = report
        self.warnings = warnings or []
        self.strict = strict

    def provider_type(self, name: str) -> ProviderTypeInfo | None:
        return self.provider_types.get(name)

    def changed_since_start(self) -> list[PluginStatus]:
        """The report with what the installed entry points say now: a plugin installed since
        start is added as "not loaded", and one upgraded or removed since carries `restart`."""
        now = {ep.name: ep for ep in entry_points(group=PROJECT)}
        report = []
        for status in self.report:
            copy = replace(status, provider_types=list(status.provider_types))
            ep = now.get(status.name)
            if status.source == "builtin" or status.status not in ("loaded", "failed"):
                pass  # a restart changes nothing for these
            elif ep is None:
                copy.restart = "uninstalled since the server started"
            elif _dist_version(ep) != status.version:
                copy.restart = f"version {_dist_version(ep)} installed since the server started"
            report.append(copy)
        seen = {s.name for s in self.report}
        for ep in (ep for name, ep in now.items() if name not in seen):
            report.append(PluginStatus(
                ep.name, "entry point", ep.value, _dist_version(ep), status="not loaded",
                restart="installed since the server started",
            ))
        return report

    def missing_type_hint(self, type_name: str) -> str:
        """Why provider type `type_name` may be missing, for a message that names it. Plugins are
        usually named after their type, so a plugin of that name is the likely culprit."""
        status = next((s for s in self.changed_since_start() if s.name == type_name), None)
        if status is not None and status.status == "failed":
            return f"plugin {type_name} failed to load ({status.error}); fix it and restart the server"
        if status is not None and status.status == "blocked":
            return f"plugin {type_name} is installed but plugins_block names it"
        if status is not None and status.status == "not allowed":
            return f"plugin {type_name} is installed but plugins_allow does not name it"
        if status is not None and status.restart:
            return f"plugin {type_name}: {status.restart}; restart the server to load it"
        return (
            "a plugin installed after the server started loads when the server restarts;"
            " `smtpconfig plugins` shows what this server loaded and why any plugin failed"
        )


def check_provider_class(cls: object) -> type[SecretProvider]:
    """Refuse a class that cannot work as a provider type, saying why."""
    if not (inspect.isclass(cls) and issubclass(cls, SecretProvider)):
        raise TypeError(f"{cls!r} is not a subclass of smtpconfig.plugin.SecretProvider")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _TYPE_NAME.match(name):
        raise TypeError(f"{cls.__name__}.name must be letters, digits, '.', '-' or '_' (got {name!r})")
    if cls.resolve is SecretProvider.resolve:
        raise TypeError(f"{cls.__name__} does not implement resolve()")
    seen: set[str] = set()
    for parameter in cls.parameters:
        for key in (parameter.name, *parameter.aliases):
            if key in seen:
                raise TypeError(f"{cls.__name__}: parameter name {key!r} is used twice")
            seen.add(key)
    return cls


def _own_version() -> str:
    try:
        return version(PROJECT)
    except PackageNotFoundError:
        return ""


def _dist_version(ep) -> str:
    return ep.dist.version if ep.dist else ""


def _candidates() -> Iterable[tuple[str, str, str, str, Callable[[], ModuleType]]]:
    """(name, source, module path, version, loader) of every plugin, first-party ones first."""
    own = _own_version()
    for name, path in BUILTINS.items():
        yield name, "builtin", path, own, functools.partial(importlib.import_module, path)
    for ep in entry_points(group=PROJECT):
        yield ep.name, "entry point", ep.value, _dist_version(ep), ep.load


def _close_match(name: str, names: Iterable[str]) -> str:
    """A parenthesis naming the closest of `names` to `name`, or all of them when none is close."""
    names = sorted(names)
    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (installed: {', '.join(names) or 'none'})"


def _unlisted(setting: str, listed: Iterable[str], report: list[PluginStatus]) -> list[str]:
    """A warning for each name in `setting` that no installed plugin has."""
    names = {s.name for s in report}
    return [
        f"{setting} names {name!r}, which is not an installed plugin{_close_match(name, names)}"
        for name in sorted(set(listed) - names)
    ]


def load_plugins(
    *, allow: Iterable[str] | None = None, block: Iterable[str] = (), strict: bool = False
) -> Plugins:
    """Load and register every plugin; return the facade. Never raises unless `strict`."""
    allowed = None if allow is None else set(allow)
    blocked = set(block)
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    report: list[PluginStatus] = []
    types: dict[str, ProviderTypeInfo] = {}
    failed: list[PluginStatus] = []
    idle: list[str] = []  # loaded, but registered nothing

    def fail(status: PluginStatus, error: BaseException) -> None:
        status.status = "failed"
        # Shown to callers of ListPlugins, not only logged: through the log redactor here too.
        status.error = plain(redact(f"{type(error).__name__}: {error}"))
        log.warning("plugin %s (%s) skipped: %s", status.name, status.module, status.error)
        log.debug("plugin %s (%s) failed here:", status.name, status.module, exc_info=error)
        failed.append(status)

    for name, source, module_path, dist_version, load in _candidates():
        status = PluginStatus(name=name, source=source, module=module_path, version=dist_version)
        report.append(status)
        if name in blocked:
            status.status = "blocked"
            continue
        if source != "builtin" and allowed is not None and name not in allowed:
            status.status = "not allowed"
            continue
        if pm.has_plugin(name):
            fail(status, ValueError(f"a plugin named {name!r} is already loaded"))
            continue
        try:
            module = load()
            pm.register(module, name=name)
        except Exception as error:  # noqa: BLE001 - any import-time failure of a plugin
            fail(status, error)
            continue
        unknown = _unknown_hooks(pm, name)  # a misspelt hook: earlier plugins passed, so it is this one's
        if unknown:
            pm.unregister(name=name)
            fail(status, pluggy.PluginValidationError(module, unknown))
            continue
        _register_types(pm, name, status, types, fail)
        if status.status == "loaded" and not status.provider_types:
            idle.append(name)
    warnings = _warnings(report, allowed or (), blocked, idle)
    if strict and failed:
        problems = "; ".join(f"{s.name} ({s.module}): {s.error}" for s in failed)
        raise PluginError(f"plugins_strict is on and {len(failed)} plugin(s) failed to load: {problems}")
    return Plugins(types, report, warnings, strict)


def _warnings(report: list[PluginStatus], allowed: Iterable[str], blocked: Iterable[str], idle: list[str]) -> list[str]:
    """Logged, and kept for the report: list names no plugin has, plugins that offer nothing."""
    warnings = _unlisted("plugins_allow", allowed, report) + _unlisted("plugins_block", blocked, report)
    warnings += [
        f"plugin {name} registered no provider type: is its hook marked @hookimpl and named"
        " register_secret_providers?" for name in idle
    ]
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _unknown_hooks(pm: pluggy.PluginManager, name: str) -> str:
    """What `check_pending` would refuse in plugin `name`, with the hook it probably meant."""
    plugin = pm.get_plugin(name)
    specs = [n for n, caller in vars(pm.hook).items() if isinstance(caller, pluggy.HookCaller) and caller.has_spec()]
    problems = []
    for hook, caller in vars(pm.hook).items():
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            match = difflib.get_close_matches(hook, specs, n=1)
            hint = f"; did you mean {match[0]!r}?" if match else f"; the hooks are {', '.join(sorted(specs))}"
            problems.append(f"unknown hook {hook!r}{hint}")
    return "; ".join(problems)


def _register_types(pm, name, status: PluginStatus, types: dict[str, ProviderTypeInfo], fail) -> None:
    """Call one plugin's hook with a `register` callback that validates and de-duplicates."""
    added: list[ProviderTypeInfo] = []

    def register(cls: type[SecretProvider]) -> None:
        cls = check_provider_class(cls)
        if cls.name in types or any(a.name == cls.name for a in added):
            owner = types[cls.name].plugin if cls.name in types else name
            raise ValueError(f"provider type {cls.name!r} is already registered by plugin {owner}")
        added.append(ProviderTypeInfo(cls, name))

    plugin = pm.get_plugin(name)
    for impl in pm.hook.register_secret_providers.get_hookimpls():
        if impl.plugin is not plugin:
            continue
        try:
            impl.function(register=register)
        except Exception as error:  # noqa: BLE001 - one plugin's failure is its own
            pm.unregister(name=name)
            fail(status, error)
            return
    for info in added:
        types[info.name] = info
        status.provider_types.append(info.name)
