"""The SMTP profile and secret objects as plain typed Python, independent of any API version.

`ProfileDraft` is what a request says (loosely typed, possibly wrong); `validation.validate` turns a
draft into a `Profile`, which is always valid. Field names are the proto field names; `FIELDS` maps
them to Keyfactor's JSON names, which are also the names used in error details.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from smtpconfig.core.secret import Secret

PROFILE_ID = 1


class AuthType(enum.IntEnum):
    """Relay authentication types, numbered as Keyfactor Command numbers them."""

    ANONYMOUS = 0
    BASIC = 2
    OAUTH_CLIENT_CREDENTIALS = 3


# Keyfactor numbers that exist there but are not supported here.
UNSUPPORTED_AUTH_TYPES = {1, 4}


@dataclass(frozen=True)
class InlineSecret:
    """A value held by the service itself, encrypted at rest."""

    value: Secret


@dataclass(frozen=True)
class ProviderRef:
    """A reference to a secret held by a provider instance, resolved at apply time."""

    provider: int
    parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))


SecretSource = InlineSecret | ProviderRef


@dataclass(frozen=True)
class RequestHeader:
    """An extra HTTP header for requests to the identity provider."""

    name: str
    value: str


@dataclass(frozen=True)
class Profile:
    """A valid SMTP profile. Credential fields the auth type does not use are always None."""

    host: str
    port: int
    sender_account: str
    sender_name: str
    relay_authentication_type: AuthType = AuthType.ANONYMOUS
    use_ssl: bool = False
    relay_username: SecretSource | None = None
    relay_password: SecretSource | None = None
    client_id: SecretSource | None = None
    client_secret: SecretSource | None = None
    token_endpoint: str = ""
    scope: str = ""
    audience: str = ""
    request_headers: tuple[RequestHeader, ...] = ()

    def secret_fields(self) -> dict[str, SecretSource]:
        """The credential fields that hold something, by proto field name."""
        return {
            name: getattr(self, name)
            for name in CREDENTIAL_FIELDS
            if getattr(self, name) is not None
        }


# --- drafts: what a request says, before validation -------------------------------------------


@dataclass(frozen=True)
class SecretDraft:
    """A secret object as sent. `plain` is True for v1's bare strings (errors then name the field
    itself rather than `Field.SecretValue`)."""

    value: str | None = None
    provider: int | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    plain: bool = False


class KeepStored(enum.Enum):
    """A read's placeholder sent back in a write, standing for what is stored: v1's
    `UnsupportedPAMSecret` keeps the stored provider reference; v2's `{"HasValue": true}` keeps the
    stored inline value, when the write names the revision it was read from and the field's
    destination is unchanged (see `profiles.ProfileService`)."""

    TOKEN = "UnsupportedPAMSecret"
    VALUE = "HasValue"


SecretInput = SecretDraft | InlineSecret | ProviderRef | KeepStored | None


@dataclass(frozen=True)
class ProfileDraft:
    """A profile as a request states it. Every field may be missing or wrong."""

    id: int | None = None
    host: str = ""
    port: int | None = None
    relay_authentication_type: int = 0
    relay_username: SecretInput = None
    relay_password: SecretInput = None
    sender_account: str = ""
    sender_name: str = ""
    use_ssl: bool = False
    client_id: SecretInput = None
    client_secret: SecretInput = None
    token_endpoint: str = ""
    scope: str = ""
    audience: str = ""
    request_headers: tuple[RequestHeader, ...] = ()

    @classmethod
    def of(cls, profile: Profile) -> ProfileDraft:
        """The draft that states a stored profile exactly (the base of a masked update)."""
        return cls(
            id=PROFILE_ID,
            **{name: getattr(profile, name) for name in FIELDS if name != "id"},
        )


# proto field name -> Keyfactor JSON name, in message order.
FIELDS: dict[str, str] = {
    "id": "Id",
    "host": "Host",
    "port": "Port",
    "relay_authentication_type": "RelayAuthenticationType",
    "relay_username": "RelayUsername",
    "relay_password": "RelayPassword",
    "sender_account": "SenderAccount",
    "sender_name": "SenderName",
    "use_ssl": "UseSSL",
    "client_id": "ClientId",
    "client_secret": "ClientSecret",
    "token_endpoint": "TokenEndpoint",
    "scope": "Scope",
    "audience": "Audience",
    "request_headers": "RequestHeaders",
}

V1_FIELDS = tuple(list(FIELDS)[:9])

CREDENTIAL_FIELDS = ("relay_username", "relay_password", "client_id", "client_secret")

# Values of these fields are never returned by any read.
WRITE_ONLY_FIELDS = frozenset({"relay_password", "client_secret"})

# Which credential fields each auth type uses; the others are not stored.
CREDENTIALS_FOR: dict[int, tuple[str, ...]] = {
    AuthType.ANONYMOUS: (),
    AuthType.BASIC: ("relay_username", "relay_password"),
    AuthType.OAUTH_CLIENT_CREDENTIALS: ("client_id", "client_secret"),
}

# Where each credential is sent: the relay's go to host:port with the TLS use_ssl asks for (the
# same relay without it shows them to the network), the OAuth client's to the token endpoint.
# A stored credential may follow no change of these (a test's candidate, a kept HasValue).
SENT_TO: dict[str, tuple[str, ...]] = {
    "relay_username": ("host", "port", "use_ssl"),
    "relay_password": ("host", "port", "use_ssl"),
    "client_id": ("token_endpoint",),
    "client_secret": ("token_endpoint",),
}
