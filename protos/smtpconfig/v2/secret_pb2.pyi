from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SecretObject(_message.Message):
    __slots__ = ("secret_value", "provider", "parameters", "has_value")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SECRET_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUE_FIELD_NUMBER: _ClassVar[int]
    secret_value: str
    provider: int
    parameters: _containers.ScalarMap[str, str]
    has_value: bool
    def __init__(self, secret_value: _Optional[str] = ..., provider: _Optional[int] = ..., parameters: _Optional[_Mapping[str, str]] = ..., has_value: _Optional[bool] = ...) -> None: ...
