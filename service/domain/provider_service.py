"""Provider instance use cases (list, get, create, update, delete) and the catalog they form.

Stored instances live in the store under ``providers/``; declared ones come from the config file.
All profile and provider writes of this process share one lock, so deleting an instance and
referencing it from the profile cannot interleave. Other replicas are guarded by compare-and-set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from smtpconfig.core.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    violation,
)
from smtpconfig.core.secret import strip_line_ending
from smtpconfig.domain.catalog import ProviderInstanceInfo, ProviderTypes, canonical_names
from smtpconfig.domain.crypto import Sealer
from smtpconfig.domain.host_access import HostAccess
from smtpconfig.domain.providers import (
    API,
    CONFIG,
    PROVIDER_PREFIX,
    InstanceDraft,
    ProviderInstance,
    decode_instance,
    encode_instance,
    provider_key,
    typed_initialization,
    validate_instance,
)
from smtpconfig.domain.secret_binding import unbound_secrets
from smtpconfig.plugin import Parameter, ParameterValue
from smtpconfig.store.base import ABSENT, AuditHook, EtagMismatch, Resync, Store

log = logging.getLogger(__name__)

_MASKABLE = {"name": "Name", "initialization": "Initialization"}


def declared_instances(
    tables: Iterable[dict[str, Any]], plugins: ProviderTypes, env: dict[str, str], access: HostAccess | None = None,
) -> list[ProviderInstance]:
    """Instances from the config file, with `{env=...}` and `{file=...}` values read now. A secret
    parameter must come from one of those, never from a literal in the file. The operator's own
    instances may use any command or path (`access`), except the server's own files."""
    instances = []
    for table in tables:
        where = f"config file provider {table['name']!r}"
        info = plugins.provider_type(table["type"])
        secret_names: set[str] = set()
        if info is not None:
            for parameter in info.cls.parameters:
                if parameter.data_type == "secret":
                    secret_names.update((parameter.name, *parameter.aliases))
        values: dict[str, str] = {}
        for key, item in table["initialization"].items():
            if isinstance(item, str):
                if key in secret_names:
                    raise FailedPrecondition(
                        f"{where}: {key} is a secret; give it as {{env = \"VAR\"}} or {{file = \"path\"}}, not a literal"
                    )
                values[key] = item
            elif "env" in item:
                if item["env"] not in env:
                    raise FailedPrecondition(f"{where}: {key} names env var {item['env']}, which is not set")
                values[key] = env[item["env"]]
            else:
                values[key] = _read_value_file(Path(item["file"]), where, key)
        try:
            instance = validate_instance(
                InstanceDraft(table["name"], table["type"], values),
                plugins,
                provider_id=table["id"],
                taken_names=set(),
                source=CONFIG,
            )
        except InvalidArgument as error:
            problems = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
            raise FailedPrecondition(f"{where}: {problems}") from None
        assert info is not None  # validate_instance refuses an unknown type
        refused = (access or HostAccess()).refusals(
            instance.type_name, info.cls.parameters, typed_initialization(info.cls, instance.initialization),
            declared=True,
        )
        if refused:
            problems = "; ".join(f"{v.field}: {v.description}" for v in refused)
            raise FailedPrecondition(f"{where}: {problems}")
        instances.append(replace(instance, etag=f"config-{instance.id}"))
    return instances


def _read_value_file(path: Path, where: str, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FailedPrecondition(f"{where}: {key} file {path}: {error.strerror}") from None
    return strip_line_ending(text)


class ProviderService:
    """The provider instances of this server, and the catalog profile validation reads."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        plugins: ProviderTypes,
        declared: list[ProviderInstance],
        write_lock: asyncio.Lock,
        access: HostAccess | None = None,
    ) -> None:
        self._store = store
        # What instances made through the API may reach on this host; nothing when not given.
        self._access = access or HostAccess()
        self._sealer = sealer
        self.plugins = plugins
        self._lock = write_lock
        self._declared = {i.id: i for i in declared}
        self._stored: dict[int, ProviderInstance] = {}
        # The store revision of the newest version (or delete) of each instance this replica knows:
        # a change that arrives later than this replica's own newer write is ignored.
        self._seen: dict[int, int] = {}
        self._references: Callable[[], set[int]] = set
        self._listeners: list[Callable[[int], None]] = []
        self._follower: asyncio.Task | None = None
        self._infos: dict[int, tuple[str, ProviderInstanceInfo]] = {}
        self._values: dict[int, tuple[str, Mapping[str, ParameterValue]]] = {}
        #: Increases whenever any instance changes; lets callers cache what they derived from them.
        self.revision = 0

    def use_references(self, references: Callable[[], set[int]]) -> None:
        """Tell the service which instance Ids the stored profile references."""
        self._references = references

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call `listener(provider_id)` whenever an instance changes or goes away."""
        self._listeners.append(listener)

    async def start(self) -> None:
        # Follow from the store revision read before the listing: nothing changed meanwhile (by
        # another replica) is missed.
        at = await self._store.revision()
        for revision in await self._store.list(PROVIDER_PREFIX):
            instance = decode_instance(revision.value, self._sealer, revision.etag)
            if instance.id in self._declared:
                raise FailedPrecondition(
                    f"provider Id {instance.id} is declared in the config file and also stored"
                    f" (as {instance.name!r}); give the declared one another id"
                )
            self._stored[instance.id] = instance
            self._seen[instance.id] = revision.revision
        changes = self._store.watch(PROVIDER_PREFIX, after=at)
        self._follower = asyncio.create_task(self._follow(changes), name="provider-follower")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            try:
                await self._follower
            except asyncio.CancelledError:
                pass

    async def _follow(self, changes) -> None:
        async for change in changes:
            if isinstance(change, Resync):  # the store lost history this replica needed
                await self._resync()
                continue
            provider_id = int(change.key[len(PROVIDER_PREFIX):])
            if change.at and change.at <= self._seen.get(provider_id, 0):
                continue  # older than what this replica holds (its own later write came back first)
            if change.at:
                self._seen[provider_id] = change.at
            if change.revision is None:
                self._stored.pop(provider_id, None)
            else:
                current = self._stored.get(provider_id)
                if current is not None and current.etag == change.revision.etag:
                    continue
                self._stored[provider_id] = decode_instance(change.revision.value, self._sealer, change.revision.etag)
            self._changed(provider_id)

    async def _resync(self) -> None:
        """Re-read every stored instance (retrying until the store answers) and tell the
        listeners of each one that differs from what this replica held."""
        delay = 0.1
        while True:
            try:
                revisions = await self._store.list(PROVIDER_PREFIX)
                break
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        fresh = {}
        for revision in revisions:
            provider_id = int(revision.key[len(PROVIDER_PREFIX):])
            self._seen[provider_id] = max(self._seen.get(provider_id, 0), revision.revision)
            current = self._stored.get(provider_id)
            if current is not None and current.etag == revision.etag:
                fresh[provider_id] = current
            else:
                fresh[provider_id] = decode_instance(revision.value, self._sealer, revision.etag)
        changed = {i for i in fresh.keys() | self._stored.keys() if fresh.get(i) is not self._stored.get(i)}
        self._stored = fresh
        for provider_id in sorted(changed):
            self._changed(provider_id)

    def _changed(self, provider_id: int) -> None:
        self.revision += 1
        self._values.pop(provider_id, None)
        for listener in self._listeners:
            listener(provider_id)

    # --- reads ----------------------------------------------------------------------------------

    def all(self) -> list[ProviderInstance]:
        return sorted([*self._declared.values(), *self._stored.values()], key=lambda i: i.id)

    def find(self, provider_id: int) -> ProviderInstance | None:
        return self._declared.get(provider_id) or self._stored.get(provider_id)

    def get(self, provider_id: int) -> ProviderInstance:
        instance = self.find(provider_id)
        if instance is None:
            raise NotFound(f"no secret provider instance has Id {provider_id}")
        return instance

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None:
        """The catalog view used by profile validation, built once per instance revision."""
        instance = self.find(provider_id)
        if instance is None:
            return None
        cached = self._infos.get(provider_id)
        if cached is not None and cached[0] == instance.etag:
            return cached[1]
        info = self.plugins.provider_type(instance.type_name)
        parameters = info.cls.parameters if info is not None else ()
        view = ProviderInstanceInfo(instance.id, instance.name, instance.type_name, parameters)
        self._infos[provider_id] = (instance.etag, view)
        return view

    def values(self, instance: ProviderInstance) -> Mapping[str, ParameterValue]:
        """The typed initialization values a provider receives (read by their kinds, defaults
        filled in), built once per instance revision. InvalidArgument names a stored value its
        parameter no longer takes (the plugin changed since it was written)."""
        cached = self._values.get(instance.id)
        if cached is not None and cached[0] == instance.etag and instance.etag:
            return cached[1]
        info = self.plugins.provider_type(instance.type_name)
        if info is None:
            raise FailedPrecondition(
                f"provider instance {instance.id} ({instance.name}) needs provider type"
                f" {instance.type_name!r}, which is not installed"
            )
        values = MappingProxyType(typed_initialization(info.cls, instance.initialization))
        if instance.etag:
            self._values[instance.id] = (instance.etag, values)
        return values

    # --- writes ---------------------------------------------------------------------------------

    async def create(self, draft: InstanceDraft, audit: AuditHook | None = None) -> ProviderInstance:
        """Store a new instance with the next free id. `audit` (see `AuditHook`) gives the audit
        record stored with it."""
        async with self._lock:
            taken = {i.name for i in self.all()}
            provider_id = max((i.id for i in self.all()), default=0) + 1
            instance = validate_instance(draft, self.plugins, provider_id=provider_id, taken_names=taken)
            self._refuse_unreachable(instance, [])
            changed = ["Name", "ProviderType", *(f"Initialization.{k}" for k in sorted(instance.initialization))]
            return await self._write(instance, ABSENT, "created", audit and audit(changed, provider=provider_id))

    async def update(
        self, provider_id: int, draft: InstanceDraft, *, mask: frozenset[str] | None, etag: str,
        audit: AuditHook | None = None,
    ) -> ProviderInstance:
        async with self._lock:
            current = self._writable(provider_id, etag)
            if draft.type_name and draft.type_name != current.type_name:
                raise InvalidArgument([violation("ProviderType", "cannot change; create a new instance instead")])
            taken = {i.name for i in self.all() if i.id != provider_id}
            if mask is None:
                name, keep, init = draft.name, {}, draft.initialization
            else:
                unknown = mask - set(_MASKABLE) - set(_MASKABLE.values())
                if unknown:
                    raise InvalidArgument([violation("update_mask", f"{p!r} cannot be updated") for p in sorted(unknown)])
                names = {_MASKABLE.get(p, p) for p in mask}
                name = draft.name if "Name" in names else current.name
                # Masked: stored values not sent stay, secret ones included; "" clears one.
                keep = dict(current.initialization)
                init = draft.initialization if "Initialization" in names else {}
            instance = validate_instance(
                InstanceDraft(name, current.type_name, init), self.plugins,
                provider_id=provider_id, taken_names=taken, keep=keep,
            )
            parameters = self._parameters(instance)
            canonical = canonical_names(parameters)
            sent = {canonical[k].name for k in init if k in canonical}  # "" counts: it clears on purpose
            unbound = unbound_secrets(parameters, current.initialization, instance.initialization, sent)
            self._refuse_unreachable(instance, unbound)
            changed = (["Name"] if instance.name != current.name else []) + [
                f"Initialization.{k}"
                for k in sorted(set(instance.initialization) | set(current.initialization))
                if instance.initialization.get(k) != current.initialization.get(k)
            ]
            return await self._write(instance, current.etag, "updated", audit and audit(changed, provider=provider_id))

    def check_reach(self, instance: ProviderInstance) -> None:
        """Refuse to resolve through an instance that reaches what this host does not allow
        (checked before every backend call: settings shrink across restarts, symlinks change)."""
        try:
            values = self.values(instance)
        except InvalidArgument as error:
            problems = "; ".join(f"{v.field} {v.description}" for v in error.violations)
            raise FailedPrecondition(
                f"provider instance {instance.id} ({instance.name}) cannot be used as stored: {problems};"
                " update it"
            ) from None
        refused = self._access.refusals(
            instance.type_name, self._parameters(instance), values, declared=instance.source == CONFIG
        )
        if refused:
            problems = "; ".join(f"{v.field} {v.description}" for v in refused)
            raise FailedPrecondition(
                f"provider instance {instance.id} ({instance.name}) cannot be used here: {problems}"
            )

    def _parameters(self, instance: ProviderInstance) -> tuple[Parameter, ...]:
        info = self.plugins.provider_type(instance.type_name)
        return info.cls.parameters if info is not None else ()

    def _refuse_unreachable(self, instance: ProviderInstance, found: list[FieldViolation]) -> None:
        found = found + self._access.refusals(
            instance.type_name, self._parameters(instance), self.values(instance)
        )
        if found:
            raise InvalidArgument(found)

    async def delete(self, provider_id: int, etag: str, audit: AuditHook | None = None) -> None:
        async with self._lock:
            current = self._writable(provider_id, etag)
            if provider_id in self._references():
                raise FailedPrecondition(
                    f"provider instance {provider_id} ({current.name}) is referenced by the SMTP profile;"
                    " point the profile elsewhere first"
                )
            try:
                await self._store.delete(provider_key(provider_id), current.etag, audit and audit((), provider=provider_id))
            except EtagMismatch:
                raise Aborted("the provider instance changed meanwhile; read it again") from None
            self._stored.pop(provider_id, None)
            self._changed(provider_id)
            log.info("provider instance %s (%s) deleted", provider_id, current.name)

    def _writable(self, provider_id: int, etag: str) -> ProviderInstance:
        current = self.get(provider_id)
        if current.source == CONFIG:
            raise FailedPrecondition(
                f"provider instance {provider_id} ({current.name}) is declared in the config file; change it there"
            )
        if etag and etag != current.etag:
            raise Aborted("the provider instance changed since that etag was read; read it again")
        return current

    async def _write(self, instance: ProviderInstance, expected, verb: str, audit_entry=None) -> ProviderInstance:
        data = encode_instance(instance, self._sealer)
        try:
            revision = await self._store.put(provider_key(instance.id), data, expected, audit_entry)
        except EtagMismatch:
            raise Aborted("another writer changed provider instances meanwhile; try again") from None
        stored = replace(instance, source=API, etag=revision.etag)
        self._stored[instance.id] = stored
        self._seen[instance.id] = max(self._seen.get(instance.id, 0), revision.revision)
        self._changed(instance.id)
        fields = ", ".join(sorted(instance.initialization)) or "none"
        log.info("provider instance %s (%s, %s) %s; initialization: %s",
                 instance.id, instance.name, instance.type_name, verb, fields)
        return stored
