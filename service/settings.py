"""Server settings from defaults, an optional TOML file, `SMTPCONFIG_*` env vars and flags, each
overriding the one before."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from smtpconfig.core.bidi import RULE as BIDI_RULE
from smtpconfig.core.bidi import has_bidi_control
from smtpconfig.core.code_variables import controls_code
from smtpconfig.core.permissions import ALL_PERMISSIONS, PERMISSIONS, is_certificate_identity, is_plain_identity

ENV_PREFIX = "SMTPCONFIG_"
DEFAULT_DATA_DIR = Path("smtpconfig-data")
DEFAULT_LISTEN = "127.0.0.1:2587"
SOCKET_NAME = "smtpconfig.sock"
KEY_NAME = "secret.key"
DATABASE_NAME = "smtpconfig.db"  # as SqliteStore names it; its values are sealed with the key
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
    # What provider instances made through the API may reach on this host (declared ones are the
    # operator's own and exempt). Commands an `exec` instance may run, each [absolute program,
    # fixed leading arguments...]: its Command must start with one of them. Empty: none.
    exec_commands: tuple[tuple[str, ...], ...] = ()
    # Directories a `file` instance's Directory may be, or be under. Empty: none.
    file_directories: tuple[Path, ...] = ()
    # Directories every other path-valued parameter (JwtFile, CaBundle, WorkingDirectory, ...)
    # may point into. Empty: none. The data directory is never reachable, whatever is listed.
    path_directories: tuple[Path, ...] = ()
    # Environment variable names an API-made instance may set for its command (an `exec`
    # instance's Environment), matched exactly. Empty: none. Names that decide which code a
    # program loads (LD_PRELOAD, PATH, ...) cannot be listed.
    exec_environment: tuple[str, ...] = ()

    # --- transport ---
    # Server certificate chain and key (PEM) for every TCP listener; re-read when the files change.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # CA bundle for client certificates: when set, every TCP caller must present one (mTLS).
    tls_client_ca_file: Path | None = None
    # Listen on a non-loopback address without TLS (never, unless this is true).
    allow_insecure_listen: bool = False
    # Unix socket file mode (octal) and group: the socket's permissions are its access boundary.
    unix_socket_mode: int = 0o600
    unix_socket_group: str = ""
    # Plaintext listener serving only grpc.health.v1 (for probes that cannot do TLS); "" for none.
    health_listen: str = ""

    # --- callers ---
    # Identity given to Unix socket callers that bring no token; "" means they must bring one.
    unix_socket_identity: str = ""
    # Keep an admin bearer token in <data_dir>/admin.token (0600), created when missing, for the
    # identity "admin" with every permission. The CLI finds it there on its own.
    admin_token: bool = True
    # Bearer tokens by identity: [[tokens]] tables with `identity` and `sha256` (hex of the token).
    tokens: tuple[tuple[str, str], ...] = ()
    # Which identity holds which permissions: [policy] table, identity = ["smtp:read", ...].
    policy: tuple[tuple[str, tuple[str, ...]], ...] = ()

    # --- observability ---
    # host:port of the Prometheus /metrics endpoint; "" for none.
    metrics_listen: str = ""
    # text or json (one object per line, with the request id of the call being served).
    log_format: str = "text"
    # Seconds between store reachability checks; health turns NOT_SERVING while the store fails.
    readiness_interval: float = 5.0
    # Days audit records are kept; older ones are deleted hourly. 0 keeps them all.
    audit_retention_days: float = 0.0
    # Calls of one identity that end before their method starts (refused, cancelled, out of time)
    # and get an audit record (per second, burst); more are only counted in the metrics. A rate of
    # 0 records every one.
    audit_refusals_rate: float = 1.0
    audit_refusals_burst: int = 100

    # --- limits ---
    # Largest request message accepted, in bytes.
    max_message_bytes: int = 1024 * 1024
    # Seconds a call that brings no deadline may run.
    default_deadline: float = 30.0
    # Calls served at once; more are refused with RESOURCE_EXHAUSTED. 0: no limit.
    max_concurrent_rpcs: int = 1000
    # Calls one identity may have in progress at once, so that no caller can take every slot.
    # 0: no limit of its own (max_concurrent_rpcs still applies).
    max_concurrent_rpcs_per_identity: int = 100
    # Per-identity token buckets (calls per second, burst). A rate of 0 means no limit.
    # ResolveSmtp and CheckSecret share the resolve bucket: both reveal what a secret holds.
    resolve_rate: float = 10.0
    resolve_burst: int = 20
    test_rate: float = 0.5
    test_burst: int = 5
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


_DEFAULTS = Settings()
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
    "tls_cert_file": "TLS_CERT_FILE",
    "tls_key_file": "TLS_KEY_FILE",
    "tls_client_ca_file": "TLS_CLIENT_CA_FILE",
    "allow_insecure_listen": "ALLOW_INSECURE_LISTEN",
    "unix_socket_mode": "UNIX_SOCKET_MODE",
    "unix_socket_group": "UNIX_SOCKET_GROUP",
    "health_listen": "HEALTH_LISTEN",
    "unix_socket_identity": "UNIX_SOCKET_IDENTITY",
    "admin_token": "ADMIN_TOKEN",
    "metrics_listen": "METRICS_LISTEN",
    "log_format": "LOG_FORMAT",
    "readiness_interval": "READINESS_INTERVAL",
    "audit_retention_days": "AUDIT_RETENTION_DAYS",
    "audit_refusals_rate": "AUDIT_REFUSALS_RATE",
    "audit_refusals_burst": "AUDIT_REFUSALS_BURST",
    "max_message_bytes": "MAX_MESSAGE_BYTES",
    "default_deadline": "DEFAULT_DEADLINE",
    "max_concurrent_rpcs": "MAX_CONCURRENT_RPCS",
    "max_concurrent_rpcs_per_identity": "MAX_CONCURRENT_RPCS_PER_IDENTITY",
    "resolve_rate": "RESOLVE_RATE",
    "resolve_burst": "RESOLVE_BURST",
    "test_rate": "TEST_RATE",
    "test_burst": "TEST_BURST",
    "exec_commands": "EXEC_COMMANDS",
    "file_directories": "FILE_DIRECTORIES",
    "path_directories": "PATH_DIRECTORIES",
    "exec_environment": "EXEC_ENVIRONMENT",
}
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_LEVELS = ("debug", "info", "warning", "error")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


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
        settings = _apply(_cleared(settings, from_env), from_env, "environment", base=None, text=True)
        sources.append("env")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        settings = _apply(settings, given, "flags", base=None, text=True)
        sources.append("flags")
    settings = replace(settings, sources=tuple(sources))
    check(settings)
    return settings


# Settings for which an empty variable says "none" (no TCP listener, no socket, no third-party
# plugin). For every other setting an empty variable sets it back to its default, so that
# `SMTPCONFIG_TLS_CERT_FILE=` undoes the config file's tls_cert_file.
_EMPTY_MEANS_NONE = frozenset({"listen", "unix_socket", "plugins_allow"})


def _cleared(settings: Settings, from_env: dict[str, str]) -> Settings:
    """`settings` with each setting given as an empty variable back at its default; those
    variables are taken out of `from_env`."""
    cleared = [name for name, value in from_env.items() if not value.strip() and name not in _EMPTY_MEANS_NONE]
    for name in cleared:
        del from_env[name]
    return replace(settings, **{name: getattr(_DEFAULTS, name) for name in cleared})


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


# Numeric settings: (type, lowest, highest, lowest allowed, what a value is, the range in words).
_SECONDS = "a number of seconds"
_NUMBERS: dict[str, tuple[type, float, float, bool, str, str]] = {
    "grace_period": (float, 0, 3600, True, _SECONDS, "between 0 and 3600 seconds"),
    "provider_timeout": (float, 0, 600, False, _SECONDS, "more than 0 and at most 600 seconds"),
    "provider_failure_ttl": (float, 0, 600, False, _SECONDS, "more than 0 and at most 600 seconds"),
    "smtp_timeout": (float, 0, 600, False, _SECONDS, "more than 0 and at most 600 seconds"),
    "default_deadline": (float, 0, 3600, False, _SECONDS, "more than 0 and at most 3600 seconds"),
    "readiness_interval": (float, 0, 3600, False, _SECONDS, "more than 0 and at most 3600 seconds"),
    "audit_retention_days": (float, 0, 36500, True, "a number of days (0 keeps every record)",
                             "between 0 (keep all) and 36500 days"),
    "audit_refusals_rate": (float, 0, 1e6, True, "records per second (0 records every refusal)",
                            "between 0 (record all) and 1000000"),
    "audit_refusals_burst": (int, 1, 1 << 30, True, "a whole number", "at least 1 and at most 2**30"),
    "resolve_rate": (float, 0, 1e6, True, "calls per second (0 for no limit)", "between 0 (no limit) and 1000000"),
    "test_rate": (float, 0, 1e6, True, "calls per second (0 for no limit)", "between 0 (no limit) and 1000000"),
    "max_message_bytes": (int, 1024, 1 << 30, True, "a whole number", "at least 1024 and at most 2**30"),
    "max_concurrent_rpcs": (int, 0, 1 << 30, True, "a whole number", "at least 0 (no limit) and at most 2**30"),
    "max_concurrent_rpcs_per_identity": (int, 0, 1 << 30, True, "a whole number",
                                         "at least 0 (no limit) and at most 2**30"),
    "resolve_burst": (int, 1, 1 << 30, True, "a whole number", "at least 1 and at most 2**30"),
    "test_burst": (int, 1, 1 << 30, True, "a whole number", "at least 1 and at most 2**30"),
}


def _number(name: str, value: Any, where: str) -> float | int:
    kind, low, high, low_allowed, what, bounds = _NUMBERS[name]
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"{where} must be {what}") from None
    # NaN fails both comparisons, so it is refused with everything out of range.
    if not ((low <= number) if low_allowed else (low < number)) or not number <= high:
        raise SettingsError(f"{where} must be {bounds}")
    return number


# One coercer per kind of setting, all with the signature (value, where, base, text): `where` names
# the setting in errors, `base` is the config file's directory for relative paths (None for the
# environment and flags), `text` says the value came as a string from the environment or a flag.
_Coercer = Callable[[Any, str, Path | None, bool], Any]


def _coerce(name: str, value: Any, origin: str, base: Path | None, text: bool) -> Any:
    where = f"{origin}: {name}"
    if name in _NUMBERS:
        return _number(name, value, where)
    coerce = _COERCERS.get(name)
    if coerce is None:
        raise AssertionError(name)
    return coerce(value, where, base, text)


def _comma_list(value: Any) -> Any:
    """A comma-separated string as its non-empty items; anything else as it is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _path(value: Any, where: str, base: Path | None, text: bool) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise SettingsError(f"{where} must be a path")
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _socket_path(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where} must be a path, or empty for none")
    if value and base is not None and not Path(value).is_absolute():
        return str(base / value)
    return value


def _listen(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
    value = _comma_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be a list of host:port addresses")
    return tuple(value)


def _log_level(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or value.lower() not in _LEVELS:
        raise SettingsError(f"{where} must be one of {', '.join(_LEVELS)}")
    return value.lower()


def _ports(value: Any, where: str, base: Path | None, text: bool) -> tuple[int, ...]:
    value = _comma_list(value)
    try:
        ports = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where} must be a list of port numbers") from None
    if not all(1 <= p <= 65535 for p in ports):
        raise SettingsError(f"{where} must be ports between 1 and 65535")
    return ports


def _plugin_names(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
    value = _comma_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be a list of plugin names")
    return tuple(value)


def _optional_address(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where} must be host:port, or empty for none")
    if value:
        split_address(value)
    return value


def _socket_mode(value: Any, where: str, base: Path | None, text: bool) -> int:
    try:
        mode = int(value, 8) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where} must be an octal file mode such as \"0660\"") from None
    if mode & ~0o777 or not mode & 0o600 == 0o600:
        raise SettingsError(f"{where} must be a file mode within 0777 that lets the owner read and write")
    if mode & 0o007:
        raise SettingsError(f"{where} must not open the socket to every local user (use a group)")
    return mode


def _socket_group(value: Any, where: str, base: Path | None, text: bool) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SettingsError(f"{where} must be a group name or number")
    return value


def _socket_identity(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or (value and not is_plain_identity(value)):
        raise SettingsError(f"{where} must be a plain name (letters, digits, . _ @ -)")
    return value


def _log_format(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or value.lower() not in ("text", "json"):
        raise SettingsError(f"{where} must be text or json")
    return value.lower()


def _flag(value: Any, where: str, base: Path | None, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise SettingsError(f"{where} must be true or false")


def _file_tokens(value: Any, where: str, base: Path | None, text: bool) -> tuple[tuple[str, str], ...]:
    if text:
        raise SettingsError(f"{where}: tokens are declared in the config file only")
    return _tokens(value, where)


def _file_policy(value: Any, where: str, base: Path | None, text: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if text:
        raise SettingsError(f"{where}: the policy is declared in the config file only")
    return _policy(value, where)


def _file_providers(value: Any, where: str, base: Path | None, text: bool) -> tuple[dict[str, Any], ...]:
    if text:
        raise SettingsError(f"{where}: provider instances are declared in the config file only")
    return _declared_providers(value, where, base)


_COERCERS: dict[str, _Coercer] = {
    **dict.fromkeys(
        ("data_dir", "key_file", "ca_bundle", "tls_cert_file", "tls_key_file", "tls_client_ca_file"), _path
    ),
    "unix_socket": _socket_path,
    "listen": _listen,
    "log_level": _log_level,
    "implicit_tls_ports": _ports,
    **dict.fromkeys(("plugins_allow", "plugins_block"), _plugin_names),
    **dict.fromkeys(("metrics_listen", "health_listen"), _optional_address),
    "unix_socket_mode": _socket_mode,
    "unix_socket_group": _socket_group,
    "unix_socket_identity": _socket_identity,
    "log_format": _log_format,
    "tokens": _file_tokens,
    "policy": _file_policy,
    **dict.fromkeys(("plugins_strict", "allow_plaintext_auth", "allow_insecure_listen", "admin_token"), _flag),
    "exec_commands": lambda value, where, base, text: _exec_commands(value, where, text),
    **dict.fromkeys(
        ("file_directories", "path_directories"), lambda value, where, base, text: _directories(value, where, base)
    ),
    "exec_environment": lambda value, where, base, text: _variable_names(value, where),
    "providers": _file_providers,
}


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
        if has_bidi_control(table["name"]):
            raise SettingsError(f"{at}.name {BIDI_RULE}")
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


def _exec_commands(value: Any, where: str, text: bool) -> tuple[tuple[str, ...], ...]:
    """[[program, args...], ...]; from the environment, the same as a JSON array."""
    if text and isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise SettingsError(f'{where} must be a JSON array of commands, e.g. [["/usr/bin/vendor-cli", "get"]]') from None
    if not isinstance(value, (list, tuple)):
        raise SettingsError(f'{where} must be a list of commands, e.g. [["/usr/bin/vendor-cli", "get"]]')
    commands = []
    for i, command in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(command, (list, tuple)) or not command or not all(isinstance(a, str) for a in command):
            raise SettingsError(f"{at} must be a non-empty list of strings: the program, then fixed arguments")
        if not os.path.isabs(command[0]):
            raise SettingsError(f"{at} must start with the program's absolute path (not {command[0]!r})")
        if any("\0" in arg for arg in command):
            raise SettingsError(f"{at} contains a NUL character")
        commands.append(tuple(command))
    return tuple(commands)


def _directories(value: Any, where: str, base: Path | None) -> tuple[Path, ...]:
    """A list of directories; from the environment, separated by ':' as PATH is."""
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) and str(v) for v in value):
        raise SettingsError(f"{where} must be a list of directories")
    paths = []
    for item in value:
        path = Path(item).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_absolute():
            raise SettingsError(f"{where}: {str(item)!r} must be an absolute path")
        paths.append(path)
    return tuple(paths)


def _tokens(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SettingsError(f"{where} must be [[tokens]] tables")
    tokens = []
    for i, table in enumerate(value):
        at = f"{where}[{i}]"
        if set(table) != {"identity", "sha256"}:
            raise SettingsError(f"{at} must have exactly `identity` and `sha256` (see `smtpconfig token new`)")
        identity, digest = table["identity"], table["sha256"]
        if not isinstance(identity, str) or not is_plain_identity(identity):
            raise SettingsError(f"{at}.identity must be a plain name (letters, digits, . _ @ -)")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest.lower()):
            raise SettingsError(f"{at}.sha256 must be 64 hex digits: the SHA-256 of the token, never the token")
        tokens.append((identity, digest.lower()))
    digests = [d for _, d in tokens]
    if len(set(digests)) != len(digests):
        raise SettingsError(f"{where}: two tokens have the same hash")
    return tuple(tokens)


def _policy(value: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a table: identity = [permissions]")
    policy = []
    for identity, permissions in value.items():
        at = f"{where}.{identity!r}"
        if not (is_plain_identity(identity) or is_certificate_identity(identity)):
            raise SettingsError(
                f"{at}: an identity is a plain name (token or Unix socket), a URI SAN such as"
                " spiffe://..., dns:NAME or cn:NAME"
            )
        if has_bidi_control(identity):
            raise SettingsError(f"{at}: an identity {BIDI_RULE}")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise SettingsError(f"{at} must be a list of permissions")
        unknown = [p for p in permissions if p not in PERMISSIONS and p != ALL_PERMISSIONS]
        if unknown:
            raise SettingsError(f"{at}: unknown permission {unknown[0]!r} (known: {', '.join(PERMISSIONS)}, *)")
        policy.append((identity, tuple(dict.fromkeys(permissions))))
    return tuple(policy)


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


def _variable_names(value: Any, where: str) -> tuple[str, ...]:
    """Environment variable names; from the environment, separated by ':' or ','."""
    if isinstance(value, str):
        value = [v.strip() for v in re.split(r"[:,]", value) if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be a list of environment variable names")
    for name in value:
        if not _VARIABLE_NAME.match(name):
            raise SettingsError(f"{where}: {name!r} is not an environment variable name")
        if controls_code(name):
            raise SettingsError(f"{where}: {name} decides what code a program loads; it cannot be allowed")
        if name.upper().startswith(ENV_PREFIX):
            raise SettingsError(f"{where}: {name} is the exec provider's own variable; it cannot be allowed")
    return tuple(dict.fromkeys(value))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> None:
    """Refuse settings that cannot work or are unsafe before anything starts."""
    tls = settings.tls_cert_file is not None or settings.tls_key_file is not None
    if tls and (settings.tls_cert_file is None or settings.tls_key_file is None):
        raise SettingsError("tls_cert_file and tls_key_file go together: set both or neither")
    if settings.tls_client_ca_file is not None and not tls:
        raise SettingsError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
    for address in settings.listen:
        host, _ = split_address(address)
        if not is_loopback(host) and not tls and not settings.allow_insecure_listen:
            raise SettingsError(
                f"listen address {address!r} is not a loopback address and TLS is not configured:"
                " set tls_cert_file and tls_key_file (and tls_client_ca_file for mTLS), or"
                " allow_insecure_listen = true to accept tokens in clear text on the network"
            )
    # Port 0 picks a free port per listener, so only fixed ports can clash.
    fixed = [a for a in (*settings.listen, settings.metrics_listen, settings.health_listen) if a and split_address(a)[1]]
    for address in fixed:
        if fixed.count(address) > 1:
            raise SettingsError(f"{address} is given to more than one listener (API, metrics, health)")
    known = {identity for identity, _ in settings.policy} | ({"admin"} if settings.admin_token else set())
    if settings.unix_socket_identity and settings.unix_socket_identity not in known:
        raise SettingsError(
            f"unix_socket_identity {settings.unix_socket_identity!r} has no entry in [policy]: its callers could do nothing"
        )
    socket = settings.socket_path
    if socket is not None and len(os.fsencode(socket.absolute())) > _MAX_SOCKET_PATH:
        raise SettingsError(
            f"unix socket path {socket.absolute()} is longer than {_MAX_SOCKET_PATH} bytes;"
            " set unix_socket (SMTPCONFIG_UNIX_SOCKET) to a shorter path"
        )
    if not settings.listen and socket is None:
        raise SettingsError("nothing to listen on: set listen or unix_socket")
