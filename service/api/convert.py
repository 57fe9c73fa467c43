"""Proto messages of both API versions to and from the domain model. The only place (with the
servicers) that knows protobuf types."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from smtpconfig.core.errors import FieldViolation, violation
from smtpconfig.domain.model import (
    WRITE_ONLY_FIELDS,
    AuthType,
    InlineSecret,
    KeepStored,
    Profile,
    ProfileDraft,
    ProviderRef,
    RequestHeader,
    SecretDraft,
    SecretSource,
)
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import secret_pb2


def message_tag(message_type, name: str) -> bytes:
    """The wire tag of `message_type`'s message field `name`: its number and wire type 2, in the
    one byte fields numbered below 16 take."""
    number = message_type.DESCRIPTOR.fields_by_name[name].number
    if not 0 < number < 16:
        raise ValueError(f"{message_type.__name__}.{name} is field {number}: its tag takes more than one byte")
    return bytes((number << 3 | 2,))


# The tag of ResolveSmtpResponse.cache_for.
_CACHE_FOR_TAG = message_tag(v2.ResolveSmtpResponse, "cache_for")

UNSUPPORTED_PAM_SECRET = KeepStored.TOKEN.value
V1_DEFAULT_PORT = 25


def duration(seconds: float) -> Duration:
    nanos = int(seconds * 1e9)
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def duration_field(tag: bytes, seconds: float) -> bytes:
    """A Duration field holding `seconds`, in wire form (`tag` from `message_tag`). Appended to a
    message serialised without that field, it sets it: how a kept answer adds the parts that change
    from call to call (a message's fields may come in any order on the wire)."""
    body = duration(seconds).SerializeToString()  # at most 17 bytes: one byte says the length
    return tag + bytes((len(body),)) + body


def cache_for_field(seconds: float) -> bytes:
    """ResolveSmtpResponse's `cache_for` holding `seconds`, in wire form: the one part of a kept
    ResolveSmtp answer that changes from call to call."""
    return duration_field(_CACHE_FOR_TAG, seconds)


def timestamp(when) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


# --- v2 -----------------------------------------------------------------------------------------


def draft_from_v2(msg: v2.SmtpProfile) -> ProfileDraft:
    return ProfileDraft(
        id=msg.id,
        host=msg.host,
        port=msg.port or None,
        relay_authentication_type=msg.relay_authentication_type,
        relay_username=_secret_from_v2(msg, "relay_username"),
        relay_password=_secret_from_v2(msg, "relay_password"),
        sender_account=msg.sender_account,
        sender_name=msg.sender_name,
        use_ssl=msg.use_ssl,
        client_id=_secret_from_v2(msg, "client_id"),
        client_secret=_secret_from_v2(msg, "client_secret"),
        token_endpoint=msg.token_endpoint,
        scope=msg.scope,
        audience=msg.audience,
        request_headers=tuple(RequestHeader(h.name, h.value) for h in msg.request_headers),
    )


def _secret_from_v2(msg: v2.SmtpProfile, name: str) -> SecretDraft | KeepStored | None:
    if not msg.HasField(name):
        return None
    obj = getattr(msg, name)
    # A read shows a write-only value as `{"HasValue": true}`: sent back alone, it stands for it.
    if obj.has_value and not obj.HasField("secret_value") and not obj.HasField("provider") and not obj.parameters:
        return KeepStored.VALUE
    return secret_from_v2(obj)


def secret_from_v2(obj: secret_pb2.SecretObject) -> SecretDraft:
    return SecretDraft(
        value=obj.secret_value if obj.HasField("secret_value") else None,
        provider=obj.provider if obj.HasField("provider") else None,
        parameters=dict(obj.parameters),
    )


def profile_to_v2(profile: Profile) -> v2.SmtpProfile:
    msg = v2.SmtpProfile(
        id=1,
        host=profile.host,
        port=profile.port,
        # protoc's .pyi types an enum field as its enum class; the runtime takes the int value.
        relay_authentication_type=int(profile.relay_authentication_type),  # type: ignore[arg-type]
        sender_account=profile.sender_account,
        sender_name=profile.sender_name,
        use_ssl=profile.use_ssl,
        token_endpoint=profile.token_endpoint,
        scope=profile.scope,
        audience=profile.audience,
        request_headers=[v2.RequestHeader(name=h.name, value=h.value) for h in profile.request_headers],
    )
    for name, source in profile.secret_fields().items():
        getattr(msg, name).CopyFrom(_secret_to_v2(name, source))
    return msg


def _secret_to_v2(name: str, source: SecretSource) -> secret_pb2.SecretObject:
    if isinstance(source, ProviderRef):
        return secret_pb2.SecretObject(provider=source.provider, parameters=dict(source.parameters))
    if name in WRITE_ONLY_FIELDS:
        return secret_pb2.SecretObject(has_value=True)
    # Identifiers (username, client id) are returned as values, as Keyfactor does.
    return secret_pb2.SecretObject(has_value=True, secret_value=source.value.reveal())


# --- v1 -----------------------------------------------------------------------------------------


def draft_from_v1(msg: v1.SmtpProfile, mask: frozenset[str] | None) -> tuple[ProfileDraft, list[FieldViolation]]:
    """The draft a v1 profile states, and the v1-only rule violations (Id, OAuth)."""
    problems: list[FieldViolation] = []
    if mask is None or "id" in mask:
        if not msg.HasField("id"):
            problems.append(violation("Id", "is required in API v1 and must be 1"))
        elif msg.id != 1:
            problems.append(violation("Id", "must be 1: there is only one SMTP profile"))
    auth_type = msg.relay_authentication_type
    if auth_type == AuthType.OAUTH_CLIENT_CREDENTIALS:
        problems.append(
            violation(
                "RelayAuthenticationType",
                "3 (OAuth client credentials) needs API v2: use smtpconfig.v2.ConfigService",
            )
        )
        auth_type = AuthType.ANONYMOUS  # judged already; avoid follow-on OAuth complaints
    return (
        ProfileDraft(
            id=1,
            host=msg.host,
            port=msg.port if msg.HasField("port") else V1_DEFAULT_PORT,
            relay_authentication_type=auth_type,
            relay_username=_secret_from_v1(msg.relay_username, placeholder_ok=True),
            relay_password=_secret_from_v1(msg.relay_password, placeholder_ok=False),
            sender_account=msg.sender_account,
            sender_name=msg.sender_name,
            use_ssl=msg.use_ssl,
        ),
        problems,
    )


def _secret_from_v1(value: str, *, placeholder_ok: bool) -> SecretDraft | KeepStored | None:
    if not value:
        return None
    if placeholder_ok and value == UNSUPPORTED_PAM_SECRET:
        return KeepStored.TOKEN
    return SecretDraft(value=value, plain=True)


def profile_to_v1(profile: Profile) -> v1.SmtpProfile:
    """What v1 can express of a profile: no password, no OAuth settings, and the literal
    `UnsupportedPAMSecret` for a username held by a secret provider."""
    username = profile.relay_username
    if isinstance(username, InlineSecret):
        shown = username.value.reveal()
    elif isinstance(username, ProviderRef):
        shown = UNSUPPORTED_PAM_SECRET
    else:
        shown = ""
    return v1.SmtpProfile(
        id=1,
        host=profile.host,
        port=profile.port,
        relay_authentication_type=int(profile.relay_authentication_type),
        relay_username=shown,
        sender_account=profile.sender_account,
        sender_name=profile.sender_name,
        use_ssl=profile.use_ssl,
    )
