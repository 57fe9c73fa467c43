"""`smtpconfig.v2.SecretProviderService`: thin servicer plus its proto conversions."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict

import grpc

from smtpconfig.api import calls, convert
from smtpconfig.api.calls import Guard, rpc
from smtpconfig.core.errors import InvalidArgument, NotFound, violation
from smtpconfig.core.secret import Secret
from smtpconfig.domain.model import CREDENTIAL_FIELDS, FIELDS, InlineSecret, ProviderRef, SecretSource
from smtpconfig.domain.profiles import ProfileService
from smtpconfig.domain.provider_service import ProviderService
from smtpconfig.domain.providers import CONFIG, IMPLICIT_TYPES, InstanceDraft, ProviderInstance
from smtpconfig.domain.resolver import Resolution, Resolver
from smtpconfig.domain.validation import validate_secret_object
from smtpconfig.plugin import Parameter
from smtpconfig.plugin.manager import Plugins, PluginStatus, ProviderTypeInfo
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc

_CHECKED_ENTRIES = 1024
# The fields of a CheckSecretResponse that change from call to call, in wire form.
_LATENCY_TAG = convert.message_tag(pb.CheckSecretResponse, "latency")
_CACHE_REMAINING_TAG = convert.message_tag(pb.CheckSecretResponse, "cache_remaining")
_CACHED = pb.CheckSecretResponse(cached=True).SerializeToString()
_DATA_TYPES = {"string": pb.PARAMETER_DATA_TYPE_STRING, "secret": pb.PARAMETER_DATA_TYPE_SECRET}


def _parameter(p: Parameter) -> pb.ProviderTypeParameter:
    return pb.ProviderTypeParameter(
        name=p.name, display_name=p.display_name, data_type=_DATA_TYPES[p.data_type],
        instance_level=p.instance_level, required=p.required, description=p.description,
        default_value=p.default or "", aliases=list(p.aliases),
        kind=f"PARAMETER_KIND_{p.kind.upper()}", minimum=p.minimum, maximum=p.maximum,
        choices=list(p.choices), schemes=list(p.schemes) if p.kind == "url" else [],
        binds_secrets=p.binds_secrets,
    )


def provider_type_to_pb(info: ProviderTypeInfo) -> pb.ProviderType:
    cls = info.cls
    return pb.ProviderType(
        name=cls.name, display_name=cls.display_name or cls.name, description=cls.description,
        parameters=[_parameter(p) for p in cls.parameters], plugin=info.plugin,
    )


_PLUGIN_STATES = {
    "loaded": pb.PLUGIN_STATE_LOADED, "failed": pb.PLUGIN_STATE_FAILED, "blocked": pb.PLUGIN_STATE_BLOCKED,
    "not allowed": pb.PLUGIN_STATE_NOT_ALLOWED, "not loaded": pb.PLUGIN_STATE_NOT_LOADED,
}


def plugin_to_pb(status: PluginStatus) -> pb.Plugin:
    return pb.Plugin(
        name=status.name, builtin=status.source == "builtin", module=status.module, version=status.version,
        state=_PLUGIN_STATES.get(status.status, pb.PLUGIN_STATE_UNSPECIFIED), error=status.error,
        provider_types=status.provider_types, restart_reason=status.restart,
    )


def plugins_to_pb(report: list[PluginStatus], *, strict: bool, warnings: list[str]) -> pb.ListPluginsResponse:
    """The plugin report as ListPlugins answers it (`smtpconfig plugins --local` prints the same)."""
    return pb.ListPluginsResponse(plugins=[plugin_to_pb(s) for s in report], strict=strict, warnings=warnings)


def instance_to_pb(instance: ProviderInstance) -> pb.ProviderInstance:
    msg = pb.ProviderInstance(
        id=instance.id, name=instance.name, provider_type=instance.type_name, etag=instance.etag,
        source=pb.PROVIDER_SOURCE_CONFIG if instance.source == CONFIG else pb.PROVIDER_SOURCE_API,
    )
    for name, value in instance.initialization.items():
        if isinstance(value, Secret):
            msg.initialization[name].has_value = True
        else:
            msg.initialization[name].CopyFrom(pb.InitializationValue(value=value, has_value=True))
    return msg


def draft_from_pb(msg: pb.ProviderInstance) -> InstanceDraft:
    return InstanceDraft(
        name=msg.name,
        type_name=msg.provider_type,
        initialization={k: v.value for k, v in msg.initialization.items() if v.HasField("value")},
    )


class _Checked:
    """CheckSecret's answer for the last value it described, serialised once without the fields
    that change from call to call (`latency`, `cached`, `cache_remaining`), which each call
    appends (a message's fields may come in any order on the wire). Callers poll the same few
    references, so most answers reuse it; another value builds it anew. It holds what the answer
    shows (instance, type, fingerprint, version), never the value."""

    __slots__ = ("_key", "_static")

    def __init__(self) -> None:
        self._key: tuple = ()
        self._static = b""

    def __call__(self, resolution: Resolution, fingerprint: str) -> bytes:
        key = (resolution.provider_id, resolution.provider_name, resolution.provider_type, fingerprint,
               resolution.version)
        if key != self._key:
            self._static = pb.CheckSecretResponse(
                success=True, provider=resolution.provider_id or 0, provider_name=resolution.provider_name,
                provider_type=resolution.provider_type, fingerprint=fingerprint, version=resolution.version or "",
            ).SerializeToString()
            self._key = key
        answer = self._static + convert.duration_field(_LATENCY_TAG, resolution.latency)
        if resolution.cached:
            answer += _CACHED
        if not math.isinf(resolution.expires_in):
            answer += convert.duration_field(_CACHE_REMAINING_TAG, resolution.expires_in)
        return answer


class SecretProviderServiceV2(pb_grpc.SecretProviderServiceServicer):
    """`smtpconfig.v2.SecretProviderService`."""

    SERVICE = "v2.SecretProviderService"

    def __init__(
        self, providers: ProviderService, plugins: Plugins, profiles: ProfileService, resolver: Resolver, guard: Guard,
    ) -> None:
        self.guard = guard
        self._providers = providers
        self._plugins = plugins
        self._profiles = profiles
        self._resolver = resolver
        # Checked secret objects by their wire bytes: callers poll the same few references, and
        # the answer only changes when provider instances do (see ProviderService.revision).
        self._checked: OrderedDict[bytes, tuple[int, SecretSource]] = OrderedDict()
        self._answer = _Checked()

    @rpc("providers:read", waits=False)
    async def ListProviderTypes(self, request, context: grpc.aio.ServicerContext):
        types = sorted(self._plugins.provider_types.values(), key=lambda t: t.name)
        return pb.ListProviderTypesResponse(
            provider_types=[provider_type_to_pb(t) for t in types if t.name not in IMPLICIT_TYPES]
        )

    @rpc("providers:read")
    async def ListPlugins(self, request, context: grpc.aio.ServicerContext):
        plugins = self._plugins
        # Entry points are read again from disk, to tell what a restart would change.
        report = await asyncio.to_thread(plugins.changed_since_start)
        return plugins_to_pb(report, strict=plugins.strict, warnings=plugins.warnings)

    @rpc("providers:read", waits=False)
    async def ListProviders(self, request, context: grpc.aio.ServicerContext):
        return pb.ListProvidersResponse(providers=[instance_to_pb(i) for i in self._providers.all()])

    @rpc("providers:read", waits=False)
    async def GetProvider(self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext):
        return pb.GetProviderResponse(provider=instance_to_pb(self._providers.get(request.id)))

    @rpc("providers:modify", audit=True)
    async def CreateProvider(self, request: pb.CreateProviderRequest, context: grpc.aio.ServicerContext):
        created = await self._providers.create(draft_from_pb(request.provider), audit=calls.current().change_record)
        return pb.CreateProviderResponse(provider=instance_to_pb(created))

    @rpc("providers:modify", audit=True)
    async def UpdateProvider(self, request: pb.UpdateProviderRequest, context: grpc.aio.ServicerContext):
        mask = frozenset(request.update_mask.paths) if request.update_mask.paths else None
        updated = await self._providers.update(
            request.provider.id, draft_from_pb(request.provider), mask=mask, etag=request.etag,
            audit=calls.current().change_record,
        )
        return pb.UpdateProviderResponse(provider=instance_to_pb(updated))

    @rpc("providers:modify", audit=True)
    async def DeleteProvider(self, request: pb.DeleteProviderRequest, context: grpc.aio.ServicerContext):
        calls.current().note(provider=request.id)
        await self._providers.delete(request.id, request.etag, audit=calls.current().change_record)
        return pb.DeleteProviderResponse()

    # providers:modify: whoever may change an instance can drop its cache that way already; this
    # also reaches declared instances, and reveals nothing.
    @rpc("providers:modify", audit=True, waits=False)
    async def FlushCache(self, request: pb.FlushCacheRequest, context: grpc.aio.ServicerContext):
        provider, parameters = self._flush_scope(request)
        flushed = self._resolver.flush(provider, parameters)
        where = "" if parameters is None else " for {" + ", ".join(f"{k}={v}" for k, v in sorted(parameters.items())) + "}"
        calls.current().note(
            provider=provider or 0, message=f"dropped values: {flushed.values}, failures: {flushed.failures}{where}"
        )
        return pb.FlushCacheResponse(values=flushed.values, failures=flushed.failures)

    def _flush_scope(self, request: pb.FlushCacheRequest) -> tuple[int | None, dict[str, str] | None]:
        """(instance Id or None for all, canonical reference parameters or None for all)."""
        scope = request.WhichOneof("scope")
        if scope == "provider":
            if request.provider <= 0:
                raise InvalidArgument([violation(
                    "Provider", "must be the positive Id of a secret provider instance; leave it out to flush all")])
            return self._providers.get(request.provider).id, None
        if scope == "secret":
            if not request.secret.HasField("provider") or request.secret.HasField("secret_value"):
                raise InvalidArgument([violation("Secret", "give Provider and Parameters: only references are cached")])
            source = validate_secret_object("Secret", convert.secret_from_v2(request.secret), self._providers)
            assert isinstance(source, ProviderRef)
            return source.provider, dict(source.parameters)
        return None, None

    @rpc("providers:read", audit=True, limit="resolve")
    async def CheckSecret(self, request: pb.CheckSecretRequest, context: grpc.aio.ServicerContext):
        target = request.WhichOneof("target")
        if target == "profile_field":
            calls.current().note(fields=[request.profile_field])
        elif target == "secret" and request.secret.provider:
            calls.current().note(provider=request.secret.provider)
        if target == "secret":
            source = self._checked_source(request.secret)
        elif target == "profile_field":
            source = self._stored_field(request.profile_field)
        else:
            raise InvalidArgument([violation("Secret", "give Secret or ProfileField")])
        resolution = await self._resolver.resolve(source)
        # A CheckSecretResponse, serialised (`_Checked`); the handlers send bytes as they are.
        return self._answer(resolution, self._resolver.fingerprint(resolution))

    def _checked_source(self, secret) -> SecretSource:
        if secret.HasField("secret_value"):  # a caller's inline value is never kept around
            return validate_secret_object("Secret", convert.secret_from_v2(secret), self._providers)
        key = secret.SerializeToString(deterministic=True)
        known = self._checked.get(key)
        if known is not None and known[0] == self._providers.revision:
            return known[1]
        source = validate_secret_object("Secret", convert.secret_from_v2(secret), self._providers)
        self._checked[key] = (self._providers.revision, source)
        while len(self._checked) > _CHECKED_ENTRIES:
            self._checked.popitem(last=False)
        return source

    def _stored_field(self, name: str) -> InlineSecret | ProviderRef:
        by_json = {FIELDS[f]: f for f in CREDENTIAL_FIELDS}
        field = by_json.get(name) or (name if name in CREDENTIAL_FIELDS else None)
        if field is None:
            raise InvalidArgument([violation("ProfileField", f"must be one of {', '.join(by_json)}")])
        source = getattr(self._profiles.get().profile, field)
        if source is None:
            raise NotFound(f"the stored profile has no {FIELDS[field]}")
        return source
