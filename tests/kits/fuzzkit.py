"""Request generators for the robustness test (tests/test_fuzz.py), built on hypothesis.

Three kinds, for any gRPC method, from its generated descriptors alone:

- `messages(descriptor)`: structured requests, field by field: edge and random scalars (empty,
  huge, NUL, odd code points, negative and extreme ints), unknown enum numbers, repeated fields,
  maps, nested messages, oneofs, field masks and etags;
- `mutated(method)`: valid requests (`BASES`) with one to three fields cleared, replaced or bent;
- `raw_requests(method, valid)`: bytes: random, or a valid encoding truncated, bit-flipped,
  spliced, or given unknown fields, wrong wire types, invalid UTF-8, overlong varints, nesting
  past the parser's limit, or more bytes than the server's message size limit.

`callers()` draws who calls and how. Values that depend on the running server (provider Ids,
etags, the secrets directory, the admin token) are drawn as placeholders for the test to bind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import secret_provider_service_pb2 as providers_pb
from tests.kits.profiles import BASIC_V1, BASIC_V2, OAUTH_V2

POOL = descriptor_pool.Default()

CALL_TIMEOUT = 20.0
MAX_MESSAGE_BYTES = 1024 * 1024  # the server's default max_message_bytes

# Placeholders a generated request may hold, for the live values (see `Live.bind` in the test).
FILE_ID = -2_000_000_001  # the Id of the `file` provider instance
VAULT_ID = -2_000_000_002  # the Id of the `vault` provider instance
ETAG = "\u27e8etag\u27e9"  # the current etag of what the request addresses
DIRECTORY = "\u27e8dir\u27e9"  # the `file` instance's secrets directory
ADMIN_TOKEN = "\u27e8admin-token\u27e9"


def request_class(method: MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.input_type)


# --- values -------------------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
EDGE_INT32 = [0, 1, -1, 2, 3, 4, 5, 25, 465, 587, 65535, 65536, 1000, 1001, INT32[0], INT32[1], FILE_ID, VAULT_ID]
EDGE_INT64 = [0, 1, -1, 2**53, INT64[0], INT64[1], 253402300799, 253402300800, -62135596800, -62135596801]

EDGE_STRINGS = [
    "", " ", "\x00", "a\x00b", "\r\n", "\t", "\x7f", "\u0085", "\u2028", "\u2029", "\ufeff", "\u202e",
    "\ufffd", "\uffff", "\U0010ffff", "\U0001f600", "e\u0301", "\u0130", "\u00df", "\u0661\u0662",
    "\u00b2", "\uff11", "%s%n", "{0}", "'; DROP TABLE x;--", "../../../../etc/passwd", "UnsupportedPAMSecret",
    "a" * 64, "a" * 65, "a" * 129, "a" * 254, "a" * 255, "a" * 257, "a" * 2049, "a" * 4097, "a" * 8193,
    "a" * 65537, "\U0001f600" * 300,
]

_any_char = st.characters(blacklist_categories=("Cs",))  # protobuf strings are UTF-8: no surrogates
TEXT = st.one_of(
    st.sampled_from(EDGE_STRINGS),
    st.text(_any_char, max_size=40),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)


def _ints(bounds: tuple[int, int], edges: list[int]) -> st.SearchStrategy[int]:
    lo, hi = bounds
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]), st.integers(lo, hi))


def _hint(values: list, generic: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(values), generic)


PROFILE_FIELD_NAMES = [f.name for f in v2.SmtpProfile.DESCRIPTOR.fields] + [
    f.json_name for f in v2.SmtpProfile.DESCRIPTOR.fields
]
PROVIDER_FIELD_NAMES = [f.name for f in providers_pb.ProviderInstance.DESCRIPTOR.fields] + [
    f.json_name for f in providers_pb.ProviderInstance.DESCRIPTOR.fields
]

# Values that reach deeper validation than random text would, by field name; random ones still
# come half the time.
STRING_HINTS: dict[str, st.SearchStrategy[str]] = {
    "host": _hint([
        "127.0.0.1", "::1", "[::1]", "127.0.0.2", "[127.0.0.1]", "::ffff:127.0.0.1", "localhost", "smtp.example.com",
        "0.0.0.0", "169.254.169.254", "host:25", "smtp://x", "x/y", "1.2.3.4.5", "-bad-.com", "a..b", "xn--",
        "\u00e9.example", " 127.0.0.1", "a" * 254,
    ], TEXT),
    "sender_account": _hint([
        "relay@example.com", "a@b.co", "a@[127.0.0.1]", "a@[IPv6:::1]", "a@[nope]", "a@localhost", "@x.com",
        "a@", "a" * 65 + "@x.com", "\u00e9@x.com", '"q"@x.com', "a@b@c.com", "<a@b.com>", "a@b.com.", "a@1.2.3.4",
    ], TEXT),
    "sender_name": _hint(["Example Relay", " ", "a" * 256, "a" * 257, "x\r\nBcc: y@z.com", "\u2028"], TEXT),
    "token_endpoint": _hint([
        "http://127.0.0.1:9/token", "https://127.0.0.1:9/t", "http://[::1]:9/t", "http://localhost:9/t",
        "https://login.example.com/t", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/", "http://127.0.0.1:0/",
        "http://127.0.0.1:99999/", "https://", "//127.0.0.1/", "http://127.0.0.1/#f", "http://[::1/",
        "http://127.0.0.1:9/" + "a" * 2048, "HTTP://127.0.0.1:9/t", "http://127.0.0.1:9/t?x=1",
    ], TEXT),
    "scope": _hint(["openid", "a b", "a  b", " a", 'a"b', "a\\b", "openid\n", "a" * 2049], TEXT),
    "provider_type": _hint(["file", "file", "vault", "exec", "inline", "FILE", "file ", "test-kv"], TEXT),
    "profile_field": _hint([
        "RelayUsername", "RelayPassword", "ClientId", "ClientSecret", "relay_username", "client_secret",
        "Host", "SenderName", "relay_username ",
    ], TEXT),
    "page_token": _hint(["0", "1", "9" * 19, "9" * 20, "-1", "1.5", " 1", "\u00b2", "\u00b9\u00b2",
                         "\u0663", "\uff11", "0x10", "0.0", "1.1", "1.", ".1", "1.2.3", "9" * 18 + "." + "9" * 18,
                         "9" * 19 + ".1", "1.\u0663", "1 .1", "1.1\n"], TEXT),
    "etag": _hint([ETAG, ETAG, ETAG, "0", "bogus", "config-1"], TEXT),
    "secret_value": _hint(["relay-password", "a" * 65536, "a" * 65537, "UnsupportedPAMSecret"], TEXT),
    "test_recipient": _hint(["rcpt@example.com", "rcpt@[127.0.0.1]", "a@", "x\r\nRCPT TO:<y@z.com>"], TEXT),
    "name": _hint(["fuzz-files", "fuzz-vault", "X-Tenant", "X-Tenant\n", "Host", "authorization", "Content-Type",
                   "x y", "X:Y", "a" * 129, "\u00e9"], TEXT),
    "value": _hint([DIRECTORY, DIRECTORY, "true", "false", "yes", "0", "-1", "1", "2", "65536", "1e3", "NaN",
                    "inf", "-0", "\u00b2", "99999999999999999999", "/nonexistent", "/dev/null", "/proc/self", "t1",
                    "a\r\nb", "token", "approle", "jwt", "secret/data", "v1/secret/data", "v1/ns/kv/data", "/"],
                   TEXT),
    "paths": _hint(PROFILE_FIELD_NAMES + PROVIDER_FIELD_NAMES + [
        "relay_password.secret_value", "RelayPassword.SecretValue", "RequestHeaders[0]", "*", "host,port", "Id",
    ], TEXT),
    "parameters.key": _hint(["File", "Secret", "Key", "Field", "Version", "SecretPath", "Host", "file", "File "],
                            TEXT),
    "parameters.value": _hint([
        "user.txt", "password.txt", "empty.txt", "big.bin", "pipe", "sub", "link-out", "missing.txt",
        "sub/../user.txt", "../outside", "/etc/hostname", "a\x00b", "a" * 4097, "1", "-1", "0", "\u00b2", "x",
        "smtp/relay", "/", "//",
    ], TEXT),
    "initialization.key": _hint([
        "Directory", "StripNewline", "MaxBytes", "File", "Host", "Url", "Address", "Token", "AuthMethod",
        "Path", "Mount", "KvVersion", "TtlSeconds", "Namespace", "JwtFile", "CaBundle", "RoleId", "SecretId",
        "Role", "Jwt", "AuthMount", "directory",
    ], TEXT),
}
INT_HINTS: dict[str, list[int]] = {
    "id": [FILE_ID, FILE_ID, VAULT_ID, 0, 1, 2, -1, 99],
    "provider": [FILE_ID, FILE_ID, VAULT_ID, 0, 1, 2, -1, 99],
    "port": [0, 1, 25, 465, 587, 65535, 65536, -1],
    "relay_authentication_type": [0, 1, 2, 3, 4, 5, -1],
    "page_size": [0, 1, -1, 999, 1000, 1001],
    "nanos": [0, 999_999_999, 1_000_000_000, -1, 999_999],
    "seconds": [0, -1, 1, 253402300799, 253402300800, -62135596800, -62135596801],
}


# --- the structured generator: any message, from its descriptor ---------------------------------


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _scalar(field: FieldDescriptor, hint_key: str) -> st.SearchStrategy:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return STRING_HINTS.get(hint_key, TEXT)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)  # NaN and infinities included
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _ints(INT32, [-1, 1, 4, 5, 99, *INT32]))
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        bounds, edges = INT32, EDGE_INT32
    elif t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        bounds, edges = INT64, EDGE_INT64
    elif t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        bounds, edges = (0, 2**32 - 1), [0, 1, 2**31, 2**32 - 1]
    else:  # uint64, fixed64
        bounds, edges = (0, 2**64 - 1), [0, 1, 2**63, 2**64 - 1]
    hinted = [v for v in INT_HINTS.get(hint_key, []) if bounds[0] <= v <= bounds[1]]
    return _ints(bounds, hinted + edges)


_STRATEGIES: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
MAX_DEPTH = 4


def field_values(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    """Values for one field: a list for repeated fields, a dict for maps, else one value."""
    if is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        keys = _scalar(key_field, f"{field.name}.key")
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            values = messages(value_field.message_type, depth + 1)
        else:
            values = _scalar(value_field, f"{field.name}.value")
        return st.dictionaries(keys, values, max_size=4)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        one = messages(field.message_type, depth + 1)
    else:
        one = _scalar(field, field.name)
    if field.is_repeated:
        # Mostly short lists; sometimes past the 32-header limit.
        return st.one_of(st.lists(one, max_size=3), st.lists(one, min_size=33, max_size=34))
    return one


def assign(msg: Message, field: FieldDescriptor, value) -> None:
    target = getattr(msg, field.name) if (field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE) else None
    if is_map(field):
        message_values = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
        for key, item in value.items():
            if message_values:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)  # present, even when empty
    else:
        setattr(msg, field.name, value)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type, every field set or not, in random order (so the last of a oneof
    wins), nested messages down to MAX_DEPTH."""
    key = (descriptor.full_name, depth)
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    cls = GetMessageClass(descriptor)
    if depth >= MAX_DEPTH or not descriptor.fields:
        _STRATEGIES[key] = st.builds(cls)
        return _STRATEGIES[key]
    values = {f.name: field_values(f, depth) for f in descriptor.fields}

    @st.composite
    def build(draw) -> Message:
        msg = cls()
        for field in draw(st.permutations(list(descriptor.fields))):
            if draw(st.booleans()):
                assign(msg, field, draw(values[field.name]))
        return msg

    _STRATEGIES[key] = build()
    return _STRATEGIES[key]


# --- the mutation generator: valid requests, then bent ------------------------------------------


def _safe_v2(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["Host"] = "127.0.0.1"
    if "TokenEndpoint" in doc:
        doc["TokenEndpoint"] = "http://127.0.0.1:9/oauth2/token"
    return doc


BASIC_V2_SAFE = _safe_v2(BASIC_V2)
OAUTH_V2_SAFE = _safe_v2(OAUTH_V2)
BASIC_V1_SAFE = {**BASIC_V1, "Host": "127.0.0.1"}
ANONYMOUS_V2 = {"Host": "::1", "Port": 25, "SenderAccount": "a@example.com", "SenderName": "A"}
REFERENCING_V2 = {
    **BASIC_V2_SAFE,
    "RelayUsername": {"Provider": FILE_ID, "Parameters": {"File": "user.txt"}},
    "RelayPassword": {"Provider": FILE_ID, "Parameters": {"File": "password.txt"}},
}
FILE_INSTANCE = {"Name": "fuzz-files", "ProviderType": "file", "Initialization": {"Directory": {"Value": DIRECTORY}}}


def parse(method_name: str, doc: dict, mask: tuple[str, ...] = ()) -> Message:
    method = POOL.FindMethodByName(method_name)
    msg = json_format.ParseDict(doc, request_class(method)())
    if mask:
        msg.update_mask.paths.extend(mask)  # the JSON form of a FieldMask would camel-case these
    return msg


V2 = "smtpconfig.v2.ConfigService."
V1 = "smtpconfig.v1.ConfigService."
PS = "smtpconfig.v2.SecretProviderService."
RCPT = "rcpt@example.com"

VAULT_INSTANCE = {
    "Name": "fuzz-vault", "ProviderType": "vault",
    "Initialization": {"Host": {"Value": "http://127.0.0.1:9"}, "Token": {"Value": "fuzz-token"}},
}
VAULT_REFERENCE = {"Secret": "smtp/relay", "Key": "password"}


class Base(NamedTuple):
    """A valid request, and how the server answers it on the test's starting state (a profile
    referencing the `file` instance; nothing listens where the relay, token endpoint and Vault
    are)."""

    request: Message
    expect: grpc.StatusCode = grpc.StatusCode.OK


def _base(method_name: str, doc: dict, mask: tuple[str, ...] = (), expect=grpc.StatusCode.OK) -> Base:
    return Base(parse(method_name, doc, mask), expect)


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
AUDIT = "smtpconfig.v2.AuditService.ListAuditRecords"

# Valid requests (once the placeholders are bound) to start mutations from; methods not listed
# start from the empty request, which is what they take.
BASES: dict[str, list[Base]] = {
    V2 + "UpdateSmtp": [
        _base(V2 + "UpdateSmtp", {"profile": BASIC_V2_SAFE}),
        _base(V2 + "UpdateSmtp", {"profile": OAUTH_V2_SAFE, "etag": ETAG}),
        _base(V2 + "UpdateSmtp", {"profile": REFERENCING_V2}),
        _base(V2 + "UpdateSmtp", {"profile": ANONYMOUS_V2, "etag": ETAG}),
        _base(V2 + "UpdateSmtp", {"profile": {"Port": 2525, "SenderName": "Other"}}, ("Port", "sender_name")),
    ],
    V2 + "TestSmtp": [
        _base(V2 + "TestSmtp", {"TestRecipient": RCPT}),
        _base(V2 + "TestSmtp", {"profile": BASIC_V2_SAFE, "TestRecipient": RCPT}),
        _base(V2 + "TestSmtp", {"profile": OAUTH_V2_SAFE, "TestRecipient": RCPT}),
        _base(V2 + "TestSmtp", {"profile": REFERENCING_V2, "TestRecipient": RCPT}),
    ],
    V1 + "UpdateSmtp": [
        _base(V1 + "UpdateSmtp", {"profile": BASIC_V1_SAFE}),
        _base(V1 + "UpdateSmtp", {"profile": {**BASIC_V1_SAFE, "RelayUsername": "UnsupportedPAMSecret"}, "etag": ETAG}),
        _base(V1 + "UpdateSmtp", {"profile": {"Id": 1, "Port": 2525}}, ("Id", "port")),
    ],
    V1 + "TestSmtp": [  # v1 reports the failed connect as an error
        _base(V1 + "TestSmtp", {"TestRecipient": RCPT}, expect=UNAVAILABLE),
        _base(V1 + "TestSmtp", {"profile": BASIC_V1_SAFE, "TestRecipient": RCPT}, expect=UNAVAILABLE),
    ],
    PS + "GetProvider": [_base(PS + "GetProvider", {"Id": FILE_ID}), _base(PS + "GetProvider", {"Id": VAULT_ID})],
    PS + "CreateProvider": [
        _base(PS + "CreateProvider", {"Provider": {**FILE_INSTANCE, "Name": "fuzz-new"}}),
        _base(PS + "CreateProvider", {"Provider": {**VAULT_INSTANCE, "Name": "fuzz-new-vault"}}),
    ],
    PS + "UpdateProvider": [
        _base(PS + "UpdateProvider", {"Provider": {**FILE_INSTANCE, "Id": FILE_ID}, "etag": ETAG}),
        _base(PS + "UpdateProvider", {
            "Provider": {"Id": FILE_ID, "Initialization": {"MaxBytes": {"Value": "100"}}}, "etag": ETAG,
        }, ("Initialization",)),
        _base(PS + "UpdateProvider", {"Provider": {"Id": VAULT_ID, "Initialization": {
            "KvVersion": {"Value": "1"}, "TtlSeconds": {"Value": "5"}, "Path": {"Value": "v1/secret"},
        }}, "etag": ETAG}, ("Initialization",)),
    ],
    PS + "DeleteProvider": [
        _base(PS + "DeleteProvider", {"Id": VAULT_ID, "etag": ETAG}),
        # Referenced by the profile.
        _base(PS + "DeleteProvider", {"Id": FILE_ID, "etag": ETAG}, expect=grpc.StatusCode.FAILED_PRECONDITION),
    ],
    PS + "FlushCache": [
        _base(PS + "FlushCache", {"Provider": FILE_ID}),
        _base(PS + "FlushCache", {"Secret": {"Provider": FILE_ID, "Parameters": {"File": "user.txt"}}}),
    ],
    PS + "CheckSecret": [
        _base(PS + "CheckSecret", {"Secret": {"Provider": FILE_ID, "Parameters": {"File": "user.txt"}}}),
        _base(PS + "CheckSecret", {"Secret": {"SecretValue": "x"}}),
        _base(PS + "CheckSecret", {"ProfileField": "RelayPassword"}),
        _base(PS + "CheckSecret", {"Secret": {"Provider": VAULT_ID, "Parameters": VAULT_REFERENCE}},
              expect=UNAVAILABLE),
    ],
    AUDIT: [
        _base(AUDIT, {"PageSize": 5}),
        _base(AUDIT, {"PageToken": "1.1", "Since": "2020-01-01T00:00:00Z"}),
    ],
}


def _slots(msg: Message, depth: int = 0) -> list[tuple[Message, FieldDescriptor]]:
    """Every (message, field) of a request, nested ones included, set or not."""
    found = []
    for field in msg.DESCRIPTOR.fields:
        found.append((msg, field))
        if field.type != FieldDescriptor.TYPE_MESSAGE or depth >= MAX_DEPTH:
            continue
        if is_map(field):
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in getattr(msg, field.name).values():
                    found += _slots(item, depth + 1)
        elif field.is_repeated:
            for item in getattr(msg, field.name):
                found += _slots(item, depth + 1)
        elif msg.HasField(field.name):
            found += _slots(getattr(msg, field.name), depth + 1)
    return found


_INT_BOUNDS = {
    FieldDescriptor.CPPTYPE_INT32: INT32, FieldDescriptor.CPPTYPE_INT64: INT64,
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_STRING_BENDS: list[Callable[[str], str]] = [
    lambda s: s + "\x00", lambda s: "\x00" + s, lambda s: s[:-1], lambda s: s[1:], lambda s: s * 300,
    lambda s: " " + s + " ", lambda s: s.upper(), lambda s: s + "\r\n", lambda s: s + "\n", lambda s: s + "\u0301",
    lambda s: s.replace(".", ".."), lambda s: s.replace("@", "@@"), lambda s: s[::-1], lambda s: s + "\U0010ffff",
]


def _bend(draw, msg: Message, field: FieldDescriptor) -> None:
    """Change a field's value a little, or replace it with any value of its type."""
    if not field.is_repeated and field.type != FieldDescriptor.TYPE_MESSAGE:
        old = getattr(msg, field.name)
        if field.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, field.name, draw(st.sampled_from(_STRING_BENDS))(old))
            return
        if field.type == FieldDescriptor.TYPE_BOOL:
            setattr(msg, field.name, not old)
            return
        bounds = _INT_BOUNDS.get(field.cpp_type)
        if bounds is not None and field.type != FieldDescriptor.TYPE_ENUM:
            new = draw(st.sampled_from([old + 1, old - 1, -old, old * 1000, 0]))
            setattr(msg, field.name, max(bounds[0], min(bounds[1], new)))
            return
    if field.is_repeated and not is_map(field) and len(getattr(msg, field.name)) and draw(st.booleans()):
        items = getattr(msg, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items.add().CopyFrom(items[0])  # a duplicate
        else:
            items.append(items[0])
        return
    msg.ClearField(field.name)
    assign(msg, field, draw(field_values(field, 2)))


@st.composite
def mutated(draw, method: MethodDescriptor) -> Message:
    bases = [b.request for b in BASES.get(method.full_name, ())] or [request_class(method)()]
    msg = copy.deepcopy(draw(st.sampled_from(bases)))
    slots = _slots(msg)
    for _ in range(draw(st.integers(0, 3)) if slots else 0):  # 0: the valid request itself
        target, field = slots[draw(st.integers(0, len(slots) - 1))]
        if draw(st.integers(0, 3)) == 0:
            target.ClearField(field.name)
        else:
            _bend(draw, target, field)
        slots = _slots(msg)
    return msg


# --- the raw generator: bytes ---------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def _field_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Paths from the request to every field, through singular message fields."""
    paths = []
    for field in descriptor.fields:
        paths.append((field,))
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated and depth < 3:
            paths += [(field, *rest) for rest in _field_paths(field.message_type, depth + 1)]
    return paths


def _wrap(path: tuple[FieldDescriptor, ...], leaf: bytes) -> bytes:
    """`leaf` (the encoded last field) inside the messages of the path before it."""
    for field in reversed(path[:-1]):
        leaf = delimited(field.number, leaf)
    return leaf


RAW_KINDS = (
    "random", "truncated", "flipped", "spliced", "unknown field", "wrong wire type", "invalid utf-8",
    "overlong varint", "doubled", "too deep", "too large",
)


@st.composite
def raw_requests(draw, method: MethodDescriptor, valid: bytes) -> tuple[str, bytes]:
    """(kind, bytes): malformed bytes, most of them close to the valid encoding `valid`."""
    kind = draw(st.sampled_from(RAW_KINDS))
    descriptor = method.input_type
    paths = _field_paths(descriptor)
    if kind == "random" or (not valid and kind in ("truncated", "flipped")):
        return kind, draw(st.binary(max_size=256))
    if kind == "truncated":
        return kind, valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "flipped":
        i = draw(st.integers(0, len(valid) - 1))
        return kind, valid[:i] + bytes([valid[i] ^ draw(st.integers(1, 255))]) + valid[i + 1:]
    if kind == "spliced":
        i = draw(st.integers(0, len(valid)))
        return kind, valid[:i] + draw(st.binary(min_size=1, max_size=16)) + valid[i:]
    if kind == "unknown field":
        number = draw(st.one_of(st.integers(1, 20), st.integers(1, 2**29 - 1), st.sampled_from([0, 19000, 2**29])))
        wire = draw(st.integers(0, 7))
        body = {0: varint(draw(st.integers(0, 2**64 - 1))), 1: b"\x00" * 8, 5: b"\x00" * 4,
                2: varint(draw(st.integers(0, 300))) + draw(st.binary(max_size=16))}.get(wire, b"")
        return kind, valid + tag(number, wire) + body
    if kind == "doubled":
        return kind, valid + valid
    if kind == "too deep":
        nested = [p for p in paths if p[-1].type == FieldDescriptor.TYPE_MESSAGE]
        number = nested[0][0].number if nested else 1
        payload = b""
        for _ in range(draw(st.sampled_from([99, 101, 200, 1000]))):
            payload = delimited(number, payload)
        return kind, payload
    if kind == "too large":
        return kind, delimited(15, b"a" * (MAX_MESSAGE_BYTES + draw(st.integers(1, 64))))
    if not paths:  # a request without fields: any field is unknown to it
        return kind, valid + delimited(draw(st.integers(1, 99)), b"\xc3\x28")
    path = draw(st.sampled_from(paths))
    leaf_field = path[-1]
    if kind == "wrong wire type":
        length_delimited = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES)
        expected = 2 if (leaf_field.type in length_delimited or leaf_field.is_repeated) else 0
        wire = draw(st.sampled_from([w for w in (0, 1, 2, 3, 4, 5, 6, 7) if w != expected]))
        return kind, valid + _wrap(path, tag(leaf_field.number, wire) + b"\x01" * draw(st.integers(0, 9)))
    if kind == "invalid utf-8":
        strings = [p for p in paths if p[-1].type == FieldDescriptor.TYPE_STRING] or [path]
        path = draw(st.sampled_from(strings))
        bad = draw(st.sampled_from([b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80", b"\xc0\xaf"]))
        return kind, valid + _wrap(path, delimited(path[-1].number, bad))
    # overlong varint: a 10-byte value where an int32 or enum goes, truncated on decode
    value = draw(st.sampled_from([2**32 + 25, 2**40 + 587, 2**63, 2**64 - 1, 2**31]))
    return kind, valid + _wrap(path, tag(leaf_field.number, 0) + varint(value))


# --- callers ------------------------------------------------------------------------------------

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@dataclass(frozen=True)
class Caller:
    """Who calls and how: metadata (ADMIN_TOKEN stands for the admin token) and a deadline."""

    metadata: tuple[tuple[str, str], ...]
    timeout: float | None = CALL_TIMEOUT

    @property
    def short_deadline(self) -> bool:
        return self.timeout is not None and self.timeout < 1


@st.composite
def callers(draw) -> Caller:
    """Three in four calls as the admin; the others without a token, with a garbage or unknown
    one, or with one over gRPC's 16 KiB metadata limit."""
    if draw(st.integers(0, 3)):
        metadata = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    else:
        make = draw(st.sampled_from([
            lambda: [],
            lambda: [("authorization", draw(_printable))],
            lambda: [("authorization", "Bearer " + draw(_printable))],
            lambda: [("authorization", "Basic YWRtaW46YWRtaW4=")],
            lambda: [("authorization", f"bearer {ADMIN_TOKEN}x")],
            lambda: [("authorization", "Bearer " + "A" * 17000)],
        ]))
        metadata = make()
    request_id = draw(st.integers(0, 9))
    if request_id == 0:
        metadata.append(("x-request-id", draw(_printable)))
    elif request_id == 1:
        metadata.append(("x-request-id", draw(st.sampled_from(["a" * 64, "a" * 65, "a" * 17000, "../x", "-", " "]))))
    deadline = draw(st.integers(0, 19))
    timeout: float | None = CALL_TIMEOUT
    if deadline == 0:
        timeout = None  # the server's default deadline applies
    elif deadline == 1:
        timeout = draw(st.sampled_from([0.0005, 0.005, 0.05]))
    return Caller(tuple(metadata), timeout)


