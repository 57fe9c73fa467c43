import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from smtpconfig.v2 import secret_pb2 as _secret_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParameterDataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAMETER_DATA_TYPE_UNSPECIFIED: _ClassVar[ParameterDataType]
    PARAMETER_DATA_TYPE_STRING: _ClassVar[ParameterDataType]
    PARAMETER_DATA_TYPE_SECRET: _ClassVar[ParameterDataType]

class ParameterKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAMETER_KIND_UNSPECIFIED: _ClassVar[ParameterKind]
    PARAMETER_KIND_STRING: _ClassVar[ParameterKind]
    PARAMETER_KIND_SECRET: _ClassVar[ParameterKind]
    PARAMETER_KIND_BOOL: _ClassVar[ParameterKind]
    PARAMETER_KIND_INT: _ClassVar[ParameterKind]
    PARAMETER_KIND_SECONDS: _ClassVar[ParameterKind]
    PARAMETER_KIND_CHOICE: _ClassVar[ParameterKind]
    PARAMETER_KIND_URL: _ClassVar[ParameterKind]
    PARAMETER_KIND_PATH: _ClassVar[ParameterKind]
    PARAMETER_KIND_COMMAND: _ClassVar[ParameterKind]
    PARAMETER_KIND_ENVIRONMENT: _ClassVar[ParameterKind]

class ProviderSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_SOURCE_UNSPECIFIED: _ClassVar[ProviderSource]
    PROVIDER_SOURCE_API: _ClassVar[ProviderSource]
    PROVIDER_SOURCE_CONFIG: _ClassVar[ProviderSource]

class PluginState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLUGIN_STATE_UNSPECIFIED: _ClassVar[PluginState]
    PLUGIN_STATE_LOADED: _ClassVar[PluginState]
    PLUGIN_STATE_FAILED: _ClassVar[PluginState]
    PLUGIN_STATE_BLOCKED: _ClassVar[PluginState]
    PLUGIN_STATE_NOT_ALLOWED: _ClassVar[PluginState]
    PLUGIN_STATE_NOT_LOADED: _ClassVar[PluginState]
PARAMETER_DATA_TYPE_UNSPECIFIED: ParameterDataType
PARAMETER_DATA_TYPE_STRING: ParameterDataType
PARAMETER_DATA_TYPE_SECRET: ParameterDataType
PARAMETER_KIND_UNSPECIFIED: ParameterKind
PARAMETER_KIND_STRING: ParameterKind
PARAMETER_KIND_SECRET: ParameterKind
PARAMETER_KIND_BOOL: ParameterKind
PARAMETER_KIND_INT: ParameterKind
PARAMETER_KIND_SECONDS: ParameterKind
PARAMETER_KIND_CHOICE: ParameterKind
PARAMETER_KIND_URL: ParameterKind
PARAMETER_KIND_PATH: ParameterKind
PARAMETER_KIND_COMMAND: ParameterKind
PARAMETER_KIND_ENVIRONMENT: ParameterKind
PROVIDER_SOURCE_UNSPECIFIED: ProviderSource
PROVIDER_SOURCE_API: ProviderSource
PROVIDER_SOURCE_CONFIG: ProviderSource
PLUGIN_STATE_UNSPECIFIED: PluginState
PLUGIN_STATE_LOADED: PluginState
PLUGIN_STATE_FAILED: PluginState
PLUGIN_STATE_BLOCKED: PluginState
PLUGIN_STATE_NOT_ALLOWED: PluginState
PLUGIN_STATE_NOT_LOADED: PluginState

class ProviderTypeParameter(_message.Message):
    __slots__ = ("name", "display_name", "data_type", "instance_level", "required", "description", "default_value", "aliases", "kind", "minimum", "maximum", "choices", "schemes", "binds_secrets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    SCHEMES_FIELD_NUMBER: _ClassVar[int]
    BINDS_SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    data_type: ParameterDataType
    instance_level: bool
    required: bool
    description: str
    default_value: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    kind: ParameterKind
    minimum: float
    maximum: float
    choices: _containers.RepeatedScalarFieldContainer[str]
    schemes: _containers.RepeatedScalarFieldContainer[str]
    binds_secrets: bool
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., data_type: _Optional[_Union[ParameterDataType, str]] = ..., instance_level: _Optional[bool] = ..., required: _Optional[bool] = ..., description: _Optional[str] = ..., default_value: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[ParameterKind, str]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., choices: _Optional[_Iterable[str]] = ..., schemes: _Optional[_Iterable[str]] = ..., binds_secrets: _Optional[bool] = ...) -> None: ...

class ProviderType(_message.Message):
    __slots__ = ("name", "display_name", "description", "parameters", "plugin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    parameters: _containers.RepeatedCompositeFieldContainer[ProviderTypeParameter]
    plugin: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ProviderTypeParameter, _Mapping]]] = ..., plugin: _Optional[str] = ...) -> None: ...

class InitializationValue(_message.Message):
    __slots__ = ("value", "has_value")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    has_value: bool
    def __init__(self, value: _Optional[str] = ..., has_value: _Optional[bool] = ...) -> None: ...

class ProviderInstance(_message.Message):
    __slots__ = ("id", "name", "provider_type", "initialization", "source", "etag")
    class InitializationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InitializationValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InitializationValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    provider_type: str
    initialization: _containers.MessageMap[str, InitializationValue]
    source: ProviderSource
    etag: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., provider_type: _Optional[str] = ..., initialization: _Optional[_Mapping[str, InitializationValue]] = ..., source: _Optional[_Union[ProviderSource, str]] = ..., etag: _Optional[str] = ...) -> None: ...

class ListProviderTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProviderTypesResponse(_message.Message):
    __slots__ = ("provider_types",)
    PROVIDER_TYPES_FIELD_NUMBER: _ClassVar[int]
    provider_types: _containers.RepeatedCompositeFieldContainer[ProviderType]
    def __init__(self, provider_types: _Optional[_Iterable[_Union[ProviderType, _Mapping]]] = ...) -> None: ...

class ListPluginsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Plugin(_message.Message):
    __slots__ = ("name", "builtin", "module", "version", "state", "error", "provider_types", "restart_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPES_FIELD_NUMBER: _ClassVar[int]
    RESTART_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    builtin: bool
    module: str
    version: str
    state: PluginState
    error: str
    provider_types: _containers.RepeatedScalarFieldContainer[str]
    restart_reason: str
    def __init__(self, name: _Optional[str] = ..., builtin: _Optional[bool] = ..., module: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[PluginState, str]] = ..., error: _Optional[str] = ..., provider_types: _Optional[_Iterable[str]] = ..., restart_reason: _Optional[str] = ...) -> None: ...

class ListPluginsResponse(_message.Message):
    __slots__ = ("plugins", "strict", "warnings")
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    plugins: _containers.RepeatedCompositeFieldContainer[Plugin]
    strict: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, plugins: _Optional[_Iterable[_Union[Plugin, _Mapping]]] = ..., strict: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderInstance]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderInstance, _Mapping]]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInstance
    def __init__(self, provider: _Optional[_Union[ProviderInstance, _Mapping]] = ...) -> None: ...

class CreateProviderRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInstance
    def __init__(self, provider: _Optional[_Union[ProviderInstance, _Mapping]] = ...) -> None: ...

class CreateProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInstance
    def __init__(self, provider: _Optional[_Union[ProviderInstance, _Mapping]] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("provider", "update_mask", "etag")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInstance
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, provider: _Optional[_Union[ProviderInstance, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInstance
    def __init__(self, provider: _Optional[_Union[ProviderInstance, _Mapping]] = ...) -> None: ...

class DeleteProviderRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: int
    etag: str
    def __init__(self, id: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteProviderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FlushCacheRequest(_message.Message):
    __slots__ = ("provider", "secret")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    provider: int
    secret: _secret_pb2.SecretObject
    def __init__(self, provider: _Optional[int] = ..., secret: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ...) -> None: ...

class FlushCacheResponse(_message.Message):
    __slots__ = ("values", "failures")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    values: int
    failures: int
    def __init__(self, values: _Optional[int] = ..., failures: _Optional[int] = ...) -> None: ...

class CheckSecretRequest(_message.Message):
    __slots__ = ("secret", "profile_field")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_FIELD_NUMBER: _ClassVar[int]
    secret: _secret_pb2.SecretObject
    profile_field: str
    def __init__(self, secret: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ..., profile_field: _Optional[str] = ...) -> None: ...

class CheckSecretResponse(_message.Message):
    __slots__ = ("success", "provider", "provider_name", "provider_type", "latency", "cached", "fingerprint", "cache_remaining", "version")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CACHE_REMAINING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    success: bool
    provider: int
    provider_name: str
    provider_type: str
    latency: _duration_pb2.Duration
    cached: bool
    fingerprint: str
    cache_remaining: _duration_pb2.Duration
    version: str
    def __init__(self, success: _Optional[bool] = ..., provider: _Optional[int] = ..., provider_name: _Optional[str] = ..., provider_type: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cached: _Optional[bool] = ..., fingerprint: _Optional[str] = ..., cache_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...
