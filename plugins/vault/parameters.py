"""The Vault provider's parameters, and their parsing into checked, typed settings.

Keyfactor's Hashicorp-Vault PAM names (`Host`, `Token`, `Path`, `Secret`, `Key`) are canonical, so a
Keyfactor reference carries over unchanged; our own names are aliases.

`Path` accepts three spellings:

- ``secret`` or ``kv/team-a``: the mount point itself (it may contain slashes).
- ``secret/data``: a trailing ``/data`` is the KV v2 API prefix; it is removed and means KV v2.
- ``v1/secret/data`` (Keyfactor's default) or ``v1/{namespace}/{mount}/data``: the URL path that
  Keyfactor's extension put between `Host` and `Secret`. The ``v1/`` is removed, a trailing
  ``/data`` means KV v2 and its absence means KV v1 (the only way such a URL read a secret). What is
  left, namespace segments included, becomes the mount in the request path, where OpenBao and
  Vault resolve a leading namespace exactly as they did for Keyfactor, relative to `Namespace`. So no
  guess is made about which segments are a namespace and which a mount with slashes. Login is not
  affected: it happens in `Namespace`, so set `Namespace` when the auth method lives in one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smtpconfig.plugin import BadParameters, Parameter, Secret

AUTH_METHODS = ("token", "approle", "jwt")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("Host", "Vault Host", aliases=("Url", "Address"), kind="url", schemes=("https", "http"),
              description="URL of Vault or OpenBao with its port, e.g. https://vault:8200 "
                          "(https:// is assumed when no scheme is given)."),
    Parameter("Token", "Vault Token", kind="secret", required=False,
              description="Token for AuthMethod token, used as given."),
    # Which login, mount and namespace receive the credentials: changing one re-aims them.
    Parameter("AuthMethod", "Auth Method", kind="choice", choices=AUTH_METHODS, required=False, default="token",
              binds_secrets=True,
              description="How to authenticate: token, approle or jwt (e.g. a Kubernetes service-account token)."),
    Parameter("RoleId", "AppRole Role ID", required=False, description="role_id for AuthMethod approle."),
    Parameter("SecretId", "AppRole Secret ID", kind="secret", required=False,
              description="secret_id for AuthMethod approle."),
    Parameter("Role", "JWT Role", required=False, description="Role to log in as with AuthMethod jwt."),
    Parameter("Jwt", "JWT", kind="secret", required=False,
              description="The JWT for AuthMethod jwt; or use JwtFile."),
    Parameter("JwtFile", "JWT File", required=False, kind="path",
              description="File holding the JWT for AuthMethod jwt, re-read at every login, e.g. "
                          "/var/run/secrets/kubernetes.io/serviceaccount/token; surrounding whitespace is ignored."),
    Parameter("AuthMount", "Auth Mount", required=False, binds_secrets=True,
              description="Mount path of the auth method; default approle or jwt, after AuthMethod."),
    Parameter("Namespace", required=False, binds_secrets=True, description="Vault namespace for login and reads."),
    # Whoever the bundle trusts can stand in for Host, so it binds the secrets as Host does.
    Parameter("CaBundle", "CA Bundle", required=False, kind="path", binds_secrets=True,
              description="Path of a PEM file with the CAs that sign Vault's certificate; default: system CAs."),
    Parameter("Path", "KV Engine Path", required=False, default="secret", aliases=("Mount",),
              description="Mount of the KV engine: secret, secret/data, or Keyfactor's v1/secret/data "
                          "or v1/{namespace}/{mount}/data."),
    Parameter("KvVersion", "KV Version", kind="int", minimum=1, maximum=2, required=False,
              description="KV engine version, 1 or 2; default 2, except that Keyfactor's v1/{mount} form "
                          "without /data means 1."),
    Parameter("TtlSeconds", "Cache Seconds", kind="seconds", minimum=0, maximum=86400, required=False,
              description="Seconds a value read from Vault may be cached (default 300); a shorter "
                          "KV v1 lease wins. 0 reads Vault on every use."),
    Parameter("Secret", "KV Secret Name", instance_level=True, aliases=("SecretPath",),
              description="Path of the secret under the mount, e.g. apps/smtp."),
    Parameter("Key", "KV Secret Key", instance_level=True, aliases=("Field",),
              description="Key inside the secret's data."),
    Parameter("Version", kind="int", minimum=1, instance_level=True, required=False,
              description="KV v2 only: read this version instead of the latest."),
)

# What an HTTP header value can carry as it is: Token and Namespace travel as X-Vault-* headers.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Settings:
    """The initialization parameters, checked. Equal settings can share one Vault client."""

    host: str
    auth_method: str
    token: Secret | None
    role_id: str | None
    secret_id: Secret | None
    role: str | None
    jwt: Secret | None
    jwt_file: str | None
    auth_mount: str
    namespace: str | None
    ca_bundle: str | None
    mount: str
    kv_version: int
    ttl: float | None = None

    def secrets(self) -> tuple[str, ...]:
        """The inline credentials; `Connection.credentials` adds those obtained at run time."""
        return tuple(s.reveal() for s in (self.token, self.secret_id, self.jwt) if s is not None and s.reveal())


@dataclass(frozen=True)
class Reference:
    """The instance parameters of one secret object, checked."""

    path: str
    key: str
    version: int | None


def _text(values: Mapping[str, Any], name: str) -> str | None:
    """A string parameter, stripped; None when absent or blank."""
    value = values.get(name)
    text = value.strip() if isinstance(value, str) else ""
    return text or None


def _secret(values: Mapping[str, Any], name: str) -> Secret | None:
    value = values.get(name)
    return value if isinstance(value, Secret) and value.reveal() else None


def _mount(raw: str) -> tuple[str, int | None]:
    """(mount, KV version implied by the spelling or None); see the module docstring."""
    text = raw.strip("/")
    keyfactor = text == "v1" or text.startswith("v1/")
    if keyfactor:
        text = text[2:].strip("/")
    implied = 1 if keyfactor else None
    if text.endswith("/data"):
        text, implied = text[: -len("/data")].rstrip("/"), 2
    if not text:
        raise BadParameters(f"Path {raw!r} names no mount; e.g. secret or v1/secret/data", "Path")
    return text, implied


def parse_settings(initialization: Mapping[str, Any]) -> Settings:
    """The settings typed initialization values state (see `PARAMETERS` for each kind), or
    BadParameters for a rule across parameters: also `VaultProvider.check_initialization`."""
    method = initialization.get("AuthMethod", "token")
    given = {name for name in ("Token", "RoleId", "SecretId", "Role", "Jwt", "JwtFile")
             if _text(initialization, name) is not None or _secret(initialization, name) is not None}
    needs = {"token": ("Token",), "approle": ("RoleId", "SecretId"), "jwt": ("Role",)}[method]
    for name in needs:
        if name not in given:
            hint = " (token is the default AuthMethod)" if method == "token" else ""
            raise BadParameters(f"AuthMethod {method}{hint} needs {name}", name)
    if method == "jwt" and not given & {"Jwt", "JwtFile"}:
        raise BadParameters("AuthMethod jwt needs Jwt or JwtFile", "Jwt")
    if method == "jwt" and {"Jwt", "JwtFile"} <= given:
        raise BadParameters("give Jwt or JwtFile, not both", "JwtFile")
    usable = {"token": {"Token"}, "approle": {"RoleId", "SecretId"}, "jwt": {"Role", "Jwt", "JwtFile"}}[method]
    unused = sorted(given - usable)
    if unused:
        raise BadParameters(f"{unused[0]} is not used with AuthMethod {method}; remove it or change AuthMethod",
                            unused[0])

    path = _text(initialization, "Path") or "secret"
    mount, implied = _mount(path)
    kv_version = initialization.get("KvVersion") or implied or 2
    if implied is not None and kv_version != implied:
        raise BadParameters(f"Path {path!r} means KV version {implied}, but KvVersion is {kv_version}", "KvVersion")
    namespace = _text(initialization, "Namespace")
    token = _secret(initialization, "Token")
    for name, value in (("Token", token.reveal() if token else None), ("Namespace", namespace)):
        if value is not None and not _HEADER_VALUE.fullmatch(value):
            raise BadParameters(f"{name} must be printable ASCII without spaces (it is sent as an HTTP header)", name)
    return Settings(
        host=initialization["Host"].rstrip("/"),
        auth_method=method,
        token=token,
        role_id=_text(initialization, "RoleId"),
        secret_id=_secret(initialization, "SecretId"),
        role=_text(initialization, "Role"),
        jwt=_secret(initialization, "Jwt"),
        jwt_file=initialization.get("JwtFile"),
        auth_mount=(_text(initialization, "AuthMount") or method).strip("/"),
        namespace=namespace.strip("/") if namespace else None,
        ca_bundle=initialization.get("CaBundle"),
        mount=mount,
        kv_version=kv_version,
        ttl=initialization.get("TtlSeconds"),
    )


def parse_reference(instance_parameters: Mapping[str, Any], settings: Settings) -> Reference:
    path = (_text(instance_parameters, "Secret") or "").strip("/")
    if not path:
        raise BadParameters("Secret is required: the path of the secret under the mount", "Secret")
    key = instance_parameters.get("Key")
    if not key:
        raise BadParameters("Key is required: the key inside the secret's data", "Key")
    version = instance_parameters.get("Version")
    if version is not None and settings.kv_version == 1:
        raise BadParameters("Version applies to KV version 2 only; this provider reads KV version 1", "Version")
    return Reference(path=path, key=key, version=version)
