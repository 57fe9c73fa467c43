"""The one JSON dialect every `--json` of the CLI prints (README, "JSON output").

Protobuf's JSON mapping, with three choices fixed so that every command reads alike:
- keys are the JSON names the protos declare: Keyfactor's PascalCase where a field mirrors
  Keyfactor or the proto names one (`Host`, `RelayPassword`, `Sequence`), lowerCamelCase for the
  rest (`etag`, `cacheFor`, `steps`);
- every field is printed, empty ones included, and enums by name (`STEP_OUTCOME_OK`,
  `RELAY_AUTHENTICATION_TYPE_BASIC`); `put -f` reads names and Keyfactor's numbers alike;
- 64-bit integers are numbers, not the strings protobuf writes for them, while a double holds them
  exactly (every count and sequence here does); timestamps are RFC 3339 in UTC, durations `"1.5s"`.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_EXACT = 2**53  # the largest run of integers a JSON reader's double holds exactly


def message_doc(message) -> dict[str, Any]:
    """A message as a JSON object in the dialect."""
    doc = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    _numbers(message.DESCRIPTOR, doc)
    return doc


def dumps(doc: Any, *, one_line: bool = False) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=None if one_line else 2)


def _numbers(descriptor: Descriptor, doc: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.json_name in doc:
            doc[field.json_name] = _value(field, doc[field.json_name])


def _value(field: FieldDescriptor, value: Any) -> Any:
    kind = field.message_type
    if kind is not None and kind.GetOptions().map_entry:
        inner = kind.fields_by_name["value"]
        return {key: _single(inner, item) for key, item in value.items()}
    if field.is_repeated:
        return [_single(field, item) for item in value]
    return _single(field, value)


def _single(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64 and isinstance(value, str) and abs(int(value)) <= _EXACT:
        return int(value)
    kind = field.message_type
    # Well-known types (Timestamp, Duration, FieldMask) keep protobuf's own string forms.
    if kind is not None and isinstance(value, dict) and not kind.full_name.startswith("google.protobuf."):
        _numbers(kind, value)
    return value
