import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from smtpconfig.v2 import secret_pb2 as _secret_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RelayAuthenticationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELAY_AUTHENTICATION_TYPE_ANONYMOUS: _ClassVar[RelayAuthenticationType]
    RELAY_AUTHENTICATION_TYPE_BASIC: _ClassVar[RelayAuthenticationType]
    RELAY_AUTHENTICATION_TYPE_OAUTH_CLIENT_CREDENTIALS: _ClassVar[RelayAuthenticationType]

class StepOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_OUTCOME_UNSPECIFIED: _ClassVar[StepOutcome]
    STEP_OUTCOME_OK: _ClassVar[StepOutcome]
    STEP_OUTCOME_FAILED: _ClassVar[StepOutcome]
    STEP_OUTCOME_SKIPPED: _ClassVar[StepOutcome]
RELAY_AUTHENTICATION_TYPE_ANONYMOUS: RelayAuthenticationType
RELAY_AUTHENTICATION_TYPE_BASIC: RelayAuthenticationType
RELAY_AUTHENTICATION_TYPE_OAUTH_CLIENT_CREDENTIALS: RelayAuthenticationType
STEP_OUTCOME_UNSPECIFIED: StepOutcome
STEP_OUTCOME_OK: StepOutcome
STEP_OUTCOME_FAILED: StepOutcome
STEP_OUTCOME_SKIPPED: StepOutcome

class RequestHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SmtpProfile(_message.Message):
    __slots__ = ("id", "host", "port", "relay_authentication_type", "relay_username", "relay_password", "sender_account", "sender_name", "use_ssl", "client_id", "client_secret", "token_endpoint", "scope", "audience", "request_headers")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RELAY_AUTHENTICATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    RELAY_USERNAME_FIELD_NUMBER: _ClassVar[int]
    RELAY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SENDER_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SENDER_NAME_FIELD_NUMBER: _ClassVar[int]
    USE_SSL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_FIELD_NUMBER: _ClassVar[int]
    id: int
    host: str
    port: int
    relay_authentication_type: RelayAuthenticationType
    relay_username: _secret_pb2.SecretObject
    relay_password: _secret_pb2.SecretObject
    sender_account: str
    sender_name: str
    use_ssl: bool
    client_id: _secret_pb2.SecretObject
    client_secret: _secret_pb2.SecretObject
    token_endpoint: str
    scope: str
    audience: str
    request_headers: _containers.RepeatedCompositeFieldContainer[RequestHeader]
    def __init__(self, id: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., relay_authentication_type: _Optional[_Union[RelayAuthenticationType, str]] = ..., relay_username: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ..., relay_password: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ..., sender_account: _Optional[str] = ..., sender_name: _Optional[str] = ..., use_ssl: _Optional[bool] = ..., client_id: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ..., client_secret: _Optional[_Union[_secret_pb2.SecretObject, _Mapping]] = ..., token_endpoint: _Optional[str] = ..., scope: _Optional[str] = ..., audience: _Optional[str] = ..., request_headers: _Optional[_Iterable[_Union[RequestHeader, _Mapping]]] = ...) -> None: ...

class GetSmtpRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSmtpResponse(_message.Message):
    __slots__ = ("profile", "etag", "update_time")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    etag: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., etag: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateSmtpRequest(_message.Message):
    __slots__ = ("profile", "update_mask", "etag")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateSmtpResponse(_message.Message):
    __slots__ = ("profile", "etag", "update_time")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    etag: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., etag: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TestSmtpRequest(_message.Message):
    __slots__ = ("profile", "test_recipient")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TEST_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    test_recipient: str
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., test_recipient: _Optional[str] = ...) -> None: ...

class TestStep(_message.Message):
    __slots__ = ("name", "outcome", "duration", "smtp_code", "message", "hint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SMTP_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome: StepOutcome
    duration: _duration_pb2.Duration
    smtp_code: int
    message: str
    hint: str
    def __init__(self, name: _Optional[str] = ..., outcome: _Optional[_Union[StepOutcome, str]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., smtp_code: _Optional[int] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class TestSmtpResponse(_message.Message):
    __slots__ = ("success", "steps")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    steps: _containers.RepeatedCompositeFieldContainer[TestStep]
    def __init__(self, success: _Optional[bool] = ..., steps: _Optional[_Iterable[_Union[TestStep, _Mapping]]] = ...) -> None: ...

class ResolveSmtpRequest(_message.Message):
    __slots__ = ("refresh",)
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    refresh: bool
    def __init__(self, refresh: _Optional[bool] = ...) -> None: ...

class ResolvedCredentials(_message.Message):
    __slots__ = ("username", "password", "access_token", "token_type", "token_expire_time")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    access_token: str
    token_type: str
    token_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., access_token: _Optional[str] = ..., token_type: _Optional[str] = ..., token_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResolveSmtpResponse(_message.Message):
    __slots__ = ("profile", "credentials", "cache_for", "etag")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FOR_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    credentials: ResolvedCredentials
    cache_for: _duration_pb2.Duration
    etag: str
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., credentials: _Optional[_Union[ResolvedCredentials, _Mapping]] = ..., cache_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class WatchSmtpRequest(_message.Message):
    __slots__ = ("after_revision",)
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    after_revision: int
    def __init__(self, after_revision: _Optional[int] = ...) -> None: ...

class WatchSmtpEvent(_message.Message):
    __slots__ = ("kind", "profile", "etag", "update_time", "revision")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WatchSmtpEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[WatchSmtpEvent.Kind]
        KIND_CHANGE: _ClassVar[WatchSmtpEvent.Kind]
        KIND_RESYNC: _ClassVar[WatchSmtpEvent.Kind]
        KIND_PROGRESS: _ClassVar[WatchSmtpEvent.Kind]
    KIND_UNSPECIFIED: WatchSmtpEvent.Kind
    KIND_SNAPSHOT: WatchSmtpEvent.Kind
    KIND_CHANGE: WatchSmtpEvent.Kind
    KIND_RESYNC: WatchSmtpEvent.Kind
    KIND_PROGRESS: WatchSmtpEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    kind: WatchSmtpEvent.Kind
    profile: SmtpProfile
    etag: str
    update_time: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, kind: _Optional[_Union[WatchSmtpEvent.Kind, str]] = ..., profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., etag: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
