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
from urllib.parse import urlsplit

from smtpconfig.plugin import BadParameters, InitializationValue, Parameter, Secret

AUTH_METHODS = ("token", "approle", "jwt")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("Host", "Vault Host", aliases=("Url", "Address"), kind="destination",
              description="URL of Vault or OpenBao with its port, e.g. https://vault:8200 "
                          "(https:// is assumed when no scheme is given)."),
    Parameter("Token", "Vault Token", data_type="secret", required=False,
              description="Token for AuthMethod token, used as given."),
    # Which login, mount and namespace receive the credentials: changing one re-aims them.
    Parameter("AuthMethod", "Auth Method", required=False, default="token", binds_secrets=True,
              description="How to authenticate: token, approle or jwt (e.g. a Kubernetes service-account token)."),
    Parameter("RoleId", "AppRole Role ID", required=False, description="role_id for AuthMethod approle."),
    Parameter("SecretId", "AppRole Secret ID", data_type="secret", required=False,
              description="secret_id for AuthMethod approle."),
    Parameter("Role", "JWT Role", required=False, description="Role to log in as with AuthMethod jwt."),
    Parameter("Jwt", "JWT", data_type="secret", required=False,
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
    Parameter("KvVersion", "KV Version", required=False,
              description="KV engine version, 1 or 2; default 2, except that Keyfactor's v1/{mount} form "
                          "without /data means 1."),
    Parameter("TtlSeconds", "Cache Seconds", required=False,
              description="Seconds a value read from Vault may be cached (default 300); a shorter "
                          "KV v1 lease wins. 0 reads Vault on every use."),
    Parameter("Secret", "KV Secret Name", instance_level=True, aliases=("SecretPath",),
              description="Path of the secret under the mount, e.g. apps/smtp."),
    Parameter("Key", "KV Secret Key", instance_level=True, aliases=("Field",),
              description="Key inside the secret's data."),
    Parameter("Version", instance_level=True, required=False,
              description="KV v2 only: read this version (a whole number) instead of the latest."),
)

_BY_NAME = {p.name: p for p in PARAMETERS}
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


def _value(values: Mapping[str, object], name: str) -> object | None:
    """A parameter by canonical name or alias (the host maps aliases; direct callers may not)."""
    for key in (name, *_BY_NAME[name].aliases):
        value = values.get(key)
        if value is not None and value != "":
            return value
    return None


def _text(values: Mapping[str, object], name: str) -> str | None:
    value = _value(values, name)
    if value is None:
        return None
    if isinstance(value, Secret):
        value = value.reveal()
    text = str(value).strip()
    return text or None


def _secret(values: Mapping[str, object], name: str) -> Secret | None:
    value = _value(values, name)
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))  # a direct caller passed a plain str; keep it bytes-exact


def _host(raw: str | None) -> str:
    if raw is None:
        raise BadParameters("Host is required: the URL of Vault, e.g. https://vault:8200", "Host")
    url = raw if "://" in raw else f"https://{raw}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BadParameters(f"Host {raw!r} is not an http(s) URL like https://vault:8200", "Host")
    try:
        _ = parts.port  # parsing the port is the check
    except ValueError:
        raise BadParameters(f"Host {raw!r} has an invalid port", "Host") from None
    return url.rstrip("/")


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


def parse_settings(initialization: Mapping[str, InitializationValue]) -> Settings:
    host = _host(_text(initialization, "Host"))
    method = (_text(initialization, "AuthMethod") or "token").lower()
    if method not in AUTH_METHODS:
        raise BadParameters(f"AuthMethod {method!r} is not one of {', '.join(AUTH_METHODS)}", "AuthMethod")
    given = {name for name in ("Token", "RoleId", "SecretId", "Role", "Jwt", "JwtFile")
             if _value(initialization, name) is not None}
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

    mount, implied = _mount(_text(initialization, "Path") or "secret")
    version_text = _text(initialization, "KvVersion")
    if version_text not in (None, "1", "2"):
        raise BadParameters(f"KvVersion must be 1 or 2, not {version_text!r}", "KvVersion")
    kv_version = int(version_text) if version_text else (implied or 2)
    if implied is not None and kv_version != implied:
        raise BadParameters(f"Path {_text(initialization, 'Path')!r} means KV version {implied}, "
                            f"but KvVersion is {kv_version}", "KvVersion")
    namespace = _text(initialization, "Namespace")
    token = _secret(initialization, "Token")
    for name, value in (("Token", token.reveal() if token else None), ("Namespace", namespace)):
        if value is not None and not _HEADER_VALUE.fullmatch(value):
            raise BadParameters(f"{name} must be printable ASCII without spaces (it is sent as an HTTP header)", name)
    return Settings(
        host=host,
        auth_method=method,
        token=token,
        role_id=_text(initialization, "RoleId"),
        secret_id=_secret(initialization, "SecretId"),
        role=_text(initialization, "Role"),
        jwt=_secret(initialization, "Jwt"),
        jwt_file=_text(initialization, "JwtFile"),
        auth_mount=(_text(initialization, "AuthMount") or method).strip("/"),
        namespace=namespace.strip("/") if namespace else None,
        ca_bundle=_text(initialization, "CaBundle"),
        mount=mount,
        kv_version=kv_version,
        ttl=_ttl(_text(initialization, "TtlSeconds")),
    )


def _ttl(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise BadParameters(f"TtlSeconds {raw!r} is not a number of seconds", "TtlSeconds") from None
    if not 0 <= seconds <= 86400:
        raise BadParameters("TtlSeconds must be between 0 and 86400", "TtlSeconds")
    return seconds


def parse_reference(instance_parameters: Mapping[str, str], settings: Settings) -> Reference:
    path = (_text(instance_parameters, "Secret") or "").strip("/")
    if not path:
        raise BadParameters("Secret is required: the path of the secret under the mount", "Secret")
    key = _value(instance_parameters, "Key")
    if key is None:
        raise BadParameters("Key is required: the key inside the secret's data", "Key")
    version_text = _text(instance_parameters, "Version")
    version = None
    if version_text is not None:
        if not re.fullmatch(r"[0-9]+", version_text) or int(version_text) < 1:
            raise BadParameters(f"Version must be a whole number from 1, not {version_text!r}", "Version")
        if settings.kv_version == 1:
            raise BadParameters("Version applies to KV version 2 only; this provider reads KV version 1",
                                "Version")
        version = int(version_text)
    return Reference(path=path, key=str(key), version=version)
