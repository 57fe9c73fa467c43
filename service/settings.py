"""Server settings from defaults, an optional TOML file, `SMTPCONFIG_*` env vars and flags, each
overriding the one before."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "SMTPCONFIG_"
DEFAULT_DATA_DIR = Path("smtpconfig-data")
DEFAULT_LISTEN = "127.0.0.1:2587"
SOCKET_NAME = "smtpconfig.sock"
KEY_NAME = "secret.key"
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything `smtpconfig serve` can be told."""

    # Where the SQLite database, the key file and the Unix socket live.
    data_dir: Path = DEFAULT_DATA_DIR
    # TCP addresses to listen on (host:port; port 0 picks a free one). Loopback only for now.
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    # Unix socket path; None means <data_dir>/smtpconfig.sock, "" means no Unix socket.
    unix_socket: str | None = None
    # Key file for secrets at rest; None means <data_dir>/secret.key, generated on first start.
    # The env var SMTPCONFIG_KEY (base64 of 32 bytes) takes precedence over any file.
    key_file: Path | None = None
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_period: float = 10.0
    # debug, info, warning or error.
    log_level: str = "info"
    # Third-party plugins (entry-point names) to load; None loads all. First-party ones always load.
    plugins_allow: tuple[str, ...] | None = None
    # Plugins never to load, first-party ones included (e.g. "exec").
    plugins_block: tuple[str, ...] = ()
    # Fail at start when a plugin cannot load, instead of reporting and skipping it.
    plugins_strict: bool = False
    # Seconds one provider call may take before it is abandoned and reported UNAVAILABLE.
    provider_timeout: float = 10.0
    # Seconds a failed resolution is remembered, so a broken reference cannot hammer a backend.
    provider_failure_ttl: float = 5.0
    # PEM CA bundle trusted for SMTP TLS and HTTPS token endpoints; None: the system CAs.
    ca_bundle: Path | None = None
    # Seconds for the SMTP connection, TLS handshake and each SMTP command at apply time.
    smtp_timeout: float = 15.0
    # Send SMTP credentials over a connection without TLS (never, unless this is true).
    allow_plaintext_auth: bool = False
    # Ports where UseSSL means implicit TLS (TLS from the first byte); STARTTLS on all others.
    implicit_tls_ports: tuple[int, ...] = (465,)
    # Provider instances declared in the config file ([[providers]] tables); read-only via the API.
    providers: tuple[dict[str, Any], ...] = ()
    # Where settings came from, for the start-up log.
    sources: tuple[str, ...] = field(default=("defaults",), compare=False)

    @property
    def socket_path(self) -> Path | None:
        if self.unix_socket == "":
            return None
        return Path(self.unix_socket) if self.unix_socket else self.data_dir / SOCKET_NAME

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / KEY_NAME

    @property
    def key_is_generated(self) -> bool:
        """The embedded default: a key file in the data directory, created when missing."""
        return self.key_file is None


_ENV = {
    "data_dir": "DATA_DIR",
    "listen": "LISTEN",
    "unix_socket": "UNIX_SOCKET",
    "key_file": "KEY_FILE",
    "grace_period": "GRACE_PERIOD",
    "log_level": "LOG_LEVEL",
    "plugins_allow": "PLUGINS_ALLOW",
    "plugins_block": "PLUGINS_BLOCK",
    "plugins_strict": "PLUGINS_STRICT",
    "provider_timeout": "PROVIDER_TIMEOUT",
    "provider_failure_ttl": "PROVIDER_FAILURE_TTL",
    "ca_bundle": "CA_BUNDLE",
    "smtp_timeout": "SMTP_TIMEOUT",
    "allow_plaintext_auth": "ALLOW_PLAINTEXT_AUTH",
    "implicit_tls_ports": "IMPLICIT_TLS_PORTS",
}
_LEVELS = ("debug", "info", "warning", "error")


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge every source and check the result. `config_file` defaults to $SMTPCONFIG_CONFIG."""
    env = os.environ if env is None else env
    settings = Settings()
    sources = ["defaults"]
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        settings = _apply(settings, _read_toml(path), f"config file {path}", base=path.parent)
        sources.append(str(path))
    from_env = {name: env[ENV_PREFIX + key] for name, key in _ENV.items() if ENV_PREFIX + key in env}
    if from_env:
        settings = _apply(settings, from_env, "environment", base=None, text=True)
        sources.append("env")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        settings = _apply(settings, given, "flags", base=None, text=True)
        sources.append("flags")
    settings = replace(settings, sources=tuple(sources))
    check(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None


def _apply(settings: Settings, values: Mapping[str, Any], origin: str, *, base: Path | None, text: bool = False) -> Settings:
    known = {f.name for f in fields(Settings)} - {"sources"}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise SettingsError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(known))})")
        changes[name] = _coerce(name, value, origin, base, text)
    return replace(settings, **changes)


def _coerce(name: str, value: Any, origin: str, base: Path | None, text: bool) -> Any:
    where = f"{origin}: {name}"
    if name in ("data_dir", "key_file", "ca_bundle"):
        if not isinstance(value, (str, Path)) or not str(value):
            raise SettingsError(f"{where} must be a path")
        path = Path(value).expanduser()
        return base / path if base is not None and not path.is_absolute() else path
    if name == "unix_socket":
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a path, or empty for none")
        if value and base is not None and not Path(value).is_absolute():
            return str(base / value)
        return value
    if name == "listen":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of host:port addresses")
        return tuple(value)
    if name == "grace_period":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where} must be a number of seconds") from None
        if not 0 <= seconds <= 3600:
            raise SettingsError(f"{where} must be between 0 and 3600 seconds")
        return seconds
    if name == "log_level":
        if not isinstance(value, str) or value.lower() not in _LEVELS:
            raise SettingsError(f"{where} must be one of {', '.join(_LEVELS)}")
        return value.lower()
    if name == "implicit_tls_ports":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        try:
            ports = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where} must be a list of port numbers") from None
        if not all(1 <= p <= 65535 for p in ports):
            raise SettingsError(f"{where} must be ports between 1 and 65535")
        return ports
    if name in ("plugins_allow", "plugins_block"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of plugin names")
        return tuple(value)
    if name in ("plugins_strict", "allow_plaintext_auth"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise SettingsError(f"{where} must be true or false")
    if name in ("provider_timeout", "provider_failure_ttl", "smtp_timeout"):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where} must be a number of seconds") from None
        if not 0 < seconds <= 600:
            raise SettingsError(f"{where} must be more than 0 and at most 600 seconds")
        return seconds
    if name == "providers":
        if text:
            raise SettingsError(f"{where}: provider instances are declared in the config file only")
        return _declared_providers(value, where, base)
    raise AssertionError(name)


def _declared_providers(value: Any, where: str, base: Path | None) -> tuple[dict[str, Any], ...]:
    """Shape-check [[providers]] tables; their types and parameters are checked at start-up, once
    plugins are loaded. `{file = "..."}` paths are made relative to the config file."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SettingsError(f"{where} must be [[providers]] tables")
    declared = []
    for i, table in enumerate(value):
        at = f"{where}[{i}]"
        unknown = set(table) - {"id", "name", "type", "initialization"}
        if unknown:
            raise SettingsError(f"{at}: unknown keys {', '.join(sorted(unknown))}")
        if not isinstance(table.get("id"), int) or isinstance(table.get("id"), bool) or table["id"] <= 0:
            raise SettingsError(f"{at}.id must be a positive integer")
        for key in ("name", "type"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise SettingsError(f"{at}.{key} is required")
        init = table.get("initialization", {})
        if not isinstance(init, dict):
            raise SettingsError(f"{at}.initialization must be a table")
        values: dict[str, Any] = {}
        for key, item in init.items():
            if isinstance(item, str):
                values[key] = item
            elif isinstance(item, dict) and len(item) == 1 and set(item) <= {"env", "file"}:
                kind, ref = next(iter(item.items()))
                if not isinstance(ref, str) or not ref:
                    raise SettingsError(f"{at}.initialization.{key}.{kind} must be a non-empty string")
                if kind == "file" and base is not None and not Path(ref).is_absolute():
                    ref = str(base / ref)
                values[key] = {kind: ref}
            else:
                raise SettingsError(
                    f'{at}.initialization.{key} must be a string, {{env = "VAR"}} or {{file = "path"}}'
                )
        declared.append({"id": table["id"], "name": table["name"], "type": table["type"], "initialization": values})
    ids = [d["id"] for d in declared]
    if len(set(ids)) != len(ids):
        raise SettingsError(f"{where}: two declared providers share an id")
    names = [d["name"] for d in declared]
    if len(set(names)) != len(names):
        raise SettingsError(f"{where}: two declared providers share a name")
    return tuple(declared)


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"listen address {address!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"listen address {address!r} has no numeric port") from None
    if not 0 <= number <= 65535:
        raise SettingsError(f"listen address {address!r}: port must be 0-65535")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> None:
    """Refuse settings that cannot work or are unsafe before anything starts."""
    for address in settings.listen:
        host, _ = split_address(address)
        if not is_loopback(host):
            raise SettingsError(
                f"listen address {address!r} is not a loopback address; without caller"
                " authentication and TLS this server listens on 127.0.0.1, ::1 or localhost only"
            )
    socket = settings.socket_path
    if socket is not None and len(os.fsencode(socket.absolute())) > _MAX_SOCKET_PATH:
        raise SettingsError(
            f"unix socket path {socket.absolute()} is longer than {_MAX_SOCKET_PATH} bytes;"
            " set unix_socket (SMTPCONFIG_UNIX_SOCKET) to a shorter path"
        )
    if not settings.listen and socket is None:
        raise SettingsError("nothing to listen on: set listen or unix_socket")
