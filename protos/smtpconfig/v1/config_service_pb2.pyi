import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SmtpProfile(_message.Message):
    __slots__ = ("id", "host", "port", "relay_authentication_type", "relay_username", "relay_password", "sender_account", "sender_name", "use_ssl")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RELAY_AUTHENTICATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    RELAY_USERNAME_FIELD_NUMBER: _ClassVar[int]
    RELAY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SENDER_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SENDER_NAME_FIELD_NUMBER: _ClassVar[int]
    USE_SSL_FIELD_NUMBER: _ClassVar[int]
    id: int
    host: str
    port: int
    relay_authentication_type: int
    relay_username: str
    relay_password: str
    sender_account: str
    sender_name: str
    use_ssl: bool
    def __init__(self, id: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., relay_authentication_type: _Optional[int] = ..., relay_username: _Optional[str] = ..., relay_password: _Optional[str] = ..., sender_account: _Optional[str] = ..., sender_name: _Optional[str] = ..., use_ssl: _Optional[bool] = ...) -> None: ...

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

class TestSmtpResponse(_message.Message):
    __slots__ = ("profile", "test_recipient")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TEST_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    profile: SmtpProfile
    test_recipient: str
    def __init__(self, profile: _Optional[_Union[SmtpProfile, _Mapping]] = ..., test_recipient: _Optional[str] = ...) -> None: ...
