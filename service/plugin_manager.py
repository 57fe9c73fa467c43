"""Loading plugins: the only module (with the API's markers) that talks to pluggy.

`load_plugins` builds a plugin manager in a factory (importing this module does nothing), registers
the first-party plugins and every entry point of group ``smtpconfig`` through the same call, and
returns `Plugins`, a typed facade: the rest of the service never touches ``pm.hook``.

A plugin that fails to import or to register is reported and skipped; with ``strict`` it is fatal.
The blocklist applies to every plugin; the allowlist, when set, to third-party ones only.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, version
from types import ModuleType
from typing import Callable, Iterable

import pluggy

from service import hookspecs
from service.errors import FailedPrecondition
from service.plugin import PROJECT, SecretProvider

log = logging.getLogger(__name__)

# First-party plugins: module paths, registered exactly like third-party entry points.
BUILTINS: dict[str, str] = {
    "inline": "plugins.inline",
    "vault": "plugins.vault",
    "exec": "plugins.exec",
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
    status: str = "loaded"  # loaded, failed, blocked, not allowed
    error: str = ""
    provider_types: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderTypeInfo:
    """A registered provider type and the plugin it came from."""

    cls: type[SecretProvider]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.name


class Plugins:
    """The loaded plugins: provider types by name, and a report of every plugin seen."""

    def __init__(self, types: dict[str, ProviderTypeInfo], report: list[PluginStatus]) -> None:
        self.provider_types = types
        self.report = report

    def provider_type(self, name: str) -> ProviderTypeInfo | None:
        return self.provider_types.get(name)


def check_provider_class(cls: object) -> type[SecretProvider]:
    """Refuse a class that cannot work as a provider type, saying why."""
    if not (inspect.isclass(cls) and issubclass(cls, SecretProvider)):
        raise TypeError(f"{cls!r} is not a subclass of service.plugin.SecretProvider")
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


def _candidates() -> Iterable[tuple[str, str, str, str, Callable[[], ModuleType]]]:
    """(name, source, module path, version, loader) of every plugin, first-party ones first."""
    own = _own_version()
    for name, path in BUILTINS.items():
        yield name, "builtin", path, own, lambda path=path: importlib.import_module(path)
    for ep in entry_points(group=PROJECT):
        yield ep.name, "entry point", ep.value, ep.dist.version if ep.dist else "", ep.load


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

    def fail(status: PluginStatus, error: BaseException) -> None:
        status.status = "failed"
        status.error = f"{type(error).__name__}: {error}"
        log.warning("plugin %s (%s) skipped: %s", status.name, status.module, status.error)
        if strict:
            raise PluginError(f"plugin {status.name} ({status.module}): {status.error}") from error

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
        try:
            pm.check_pending()  # a misspelt hook: earlier plugins passed, so it is this one's
        except pluggy.PluginValidationError as error:
            pm.unregister(name=name)
            fail(status, error)
            continue
        _register_types(pm, name, status, types, fail)
    return Plugins(types, report)


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
