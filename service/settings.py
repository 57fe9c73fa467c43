"""Server settings from defaults, an optional TOML file, `SMTPCONFIG_*` env vars and flags, each
overriding the one before.

Each setting is described once, where the `Settings` dataclass declares it: its type and default,
and (`_setting`) the kind of value it takes, its environment variable and its `serve` flag. The
variables (`ENV_VARS`), the flags (`FLAGS`), the conversion of every source and the README check
are all read from there (`TABLE`)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from socket import gethostname
from typing import Any, NamedTuple, TypeVar

from smtpconfig.core.aio import EVENT_LOOPS, default_event_loop, uvloop_installed
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
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message names it."""


# --- how a setting is read --------------------------------------------------------------------

# A kind of setting checks and converts a value from any source: (value, where, base, text), where
# `where` names the setting in errors, `base` is the config file's directory for relative paths
# (None for the environment and flags), and `text` says the value came as a string from the
# environment or a flag.
_Kind = Callable[[Any, str, Path | None, bool], Any]


class Flag(NamedTuple):
    """A setting's `smtpconfig serve` flag: its name, its help, and argparse's other keywords
    (`action`, `type`, `choices`, `metavar`)."""

    name: str
    help: str
    options: Mapping[str, Any]


def _flag(name: str, help: str, **options: Any) -> Flag:
    return Flag(name, help, options)


@dataclass(frozen=True)
class Setting:
    """How one setting is read: its `kind`; `env`, the name of its variable after SMTPCONFIG_
    (None: the config file only); `flag`, its `serve` flag if it has one; `empty_means_none`: an
    empty variable says "none" (no TCP listener, no socket, no third-party plugin) instead of
    setting it back to its default, as it does for every other setting, so that
    `SMTPCONFIG_TLS_CERT_FILE=` undoes the config file's tls_cert_file."""

    kind: _Kind
    env: str | None = None
    flag: Flag | None = None
    empty_means_none: bool = False


_T = TypeVar("_T")


def _setting(
    default: _T, kind: _Kind, env: str | None = None, flag: Flag | None = None, *, empty_means_none: bool = False
) -> _T:
    """A `Settings` field: its default, and how it is read (`Setting`)."""
    return field(default=default, metadata={Setting: Setting(kind, env, flag, empty_means_none)})


# --- kinds of setting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Number:
    """A number from `low` (itself allowed only when `low_allowed`) to `high`; `what` a value is and
    `bounds`, the range, in words for errors."""

    type: Callable[[Any], float | int]
    low: float
    high: float
    low_allowed: bool
    what: str
    bounds: str

    def __call__(self, value: Any, where: str, base: Path | None, text: bool) -> float | int:
        try:
            number = self.type(value)
        except (TypeError, ValueError, OverflowError):
            raise SettingsError(f"{where} must be {self.what}") from None
        # NaN fails both comparisons, so it is refused with everything out of range.
        if not ((self.low <= number) if self.low_allowed else (self.low < number)) or not number <= self.high:
            raise SettingsError(f"{where} must be {self.bounds}")
        return number


_SECONDS = "a number of seconds"
_WHOLE = "a whole number"
_GRACE = _Number(float, 0, 3600, True, _SECONDS, "between 0 and 3600 seconds")
_TIMEOUT = _Number(float, 0, 600, False, _SECONDS, "more than 0 and at most 600 seconds")
_INTERVAL = _Number(float, 0, 3600, False, _SECONDS, "more than 0 and at most 3600 seconds")
_DAYS = _Number(float, 0, 36500, True, "a number of days (0 keeps every record)", "between 0 (keep all) and 36500 days")
_REFUSALS_RATE = _Number(
    float, 0, 1e6, True, "records per second (0 records every refusal)", "between 0 (record all) and 1000000"
)
_RATE = _Number(float, 0, 1e6, True, "calls per second (0 for no limit)", "between 0 (no limit) and 1000000")
_BURST = _Number(int, 1, 1 << 30, True, _WHOLE, "at least 1 and at most 2**30")
_MESSAGE_BYTES = _Number(int, 1024, 1 << 30, True, _WHOLE, "at least 1024 and at most 2**30")
_COUNT = _Number(int, 0, 1 << 30, True, _WHOLE, "at least 0 (no limit) and at most 2**30")
_AUDIT_BYTES = _Number(int, 4096, 1 << 40, True, "a number of bytes", "at least 4096 and at most 2**40")
_KEEP_FILES = _Number(int, 1, 100_000, True, _WHOLE, "at least 1 and at most 100000")
_WORKERS = _Number(int, 0, 256, True, "a whole number (0: one per core)", "between 0 (one per core) and 256")
_REPLICA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


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
    if not isinstance(value, str) or value.lower() not in _LOG_FORMATS:
        raise SettingsError(f"{where} must be text or json")
    return value.lower()


_STORES = ("sqlite", "etcd")


def _store(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or value.lower() not in _STORES:
        raise SettingsError(f"{where} must be sqlite (the embedded default) or etcd (cluster mode)")
    return value.lower()


def _endpoints(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
    value = _comma_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be a list of host:port addresses of etcd members")
    for endpoint in value:
        if "://" in endpoint:
            raise SettingsError(f"{where}: {endpoint!r} must be host:port, without a scheme (TLS comes from etcd_ca_file)")
        host, port = split_address(endpoint)
        if port == 0:
            raise SettingsError(f"{where}: {endpoint!r} needs a port")
    return tuple(value)


def _upstream(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
    value = _comma_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be host:port of the upstream smtpconfig, or several comma-separated")
    for address in value:
        if "://" in address:
            raise SettingsError(f"{where}: {address!r} must be host:port, without a scheme (TLS comes from upstream_ca_file)")
        if split_address(address)[1] == 0:
            raise SettingsError(f"{where}: {address!r} needs a port")
    return tuple(value)


def _identities(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
    value = _comma_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"{where} must be a list of identities")
    return tuple(value)


def _etcd_prefix(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or not value.startswith("/") or not value.endswith("/") or len(value) < 3:
        raise SettingsError(f'{where} must start and end with "/" and name something, e.g. "/smtpconfig/"')
    return value


def _etcd_user(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise SettingsError(f"{where} must be an etcd user name (no spaces), or empty for none")
    return value


def _replica_name(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or (value and not _REPLICA_NAME.match(value)):
        raise SettingsError(f"{where} must be up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _event_loop(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or value.lower() not in EVENT_LOOPS:
        raise SettingsError(f"{where} must be uvloop or asyncio")
    if value.lower() == "uvloop" and not uvloop_installed():
        raise SettingsError(f"{where} is uvloop, which is not installed here; install it, or use asyncio")
    return value.lower()


def _audit_fsync(value: Any, where: str, base: Path | None, text: bool) -> str:
    if not isinstance(value, str) or value.lower() not in ("interval", "batch"):
        raise SettingsError(f"{where} must be interval or batch")
    return value.lower()


def _bool(value: Any, where: str, base: Path | None, text: bool) -> bool:
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


def _exec_commands(value: Any, where: str, base: Path | None, text: bool) -> tuple[tuple[str, ...], ...]:
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


def _directories(value: Any, where: str, base: Path | None, text: bool) -> tuple[Path, ...]:
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


def _variable_names(value: Any, where: str, base: Path | None, text: bool) -> tuple[str, ...]:
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


# --- the settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything `smtpconfig serve` can be told. Every field but `sources` is a setting: its name is
    its TOML key, and `_setting` says how it is read."""

    # Where the SQLite database, the key file and the Unix socket live.
    data_dir: Path = _setting(
        DEFAULT_DATA_DIR, _path, "DATA_DIR", _flag("--data-dir", "data directory (default ./smtpconfig-data)", metavar="DIR")
    )
    # TCP addresses to listen on (host:port; port 0 picks a free one). Loopback only for now.
    listen: tuple[str, ...] = _setting(
        (DEFAULT_LISTEN,), _listen, "LISTEN",
        _flag("--listen", "TCP address host:port, repeatable (default 127.0.0.1:2587)", action="append", metavar="HOST:PORT"),
        empty_means_none=True,
    )
    # Unix socket path; None means <data_dir>/smtpconfig.sock, "" means no Unix socket.
    unix_socket: str | None = _setting(
        None, _socket_path, "UNIX_SOCKET",
        _flag("--unix-socket", "Unix socket path ('' for none; default DATA_DIR/smtpconfig.sock)", metavar="PATH"),
        empty_means_none=True,
    )
    # Key file for secrets at rest; None means <data_dir>/secret.key, generated on first start.
    # The env var SMTPCONFIG_KEY (base64 of 32 bytes) takes precedence over any file.
    key_file: Path | None = _setting(
        None, _path, "KEY_FILE",
        _flag("--key-file", "encryption key file (default DATA_DIR/secret.key, generated)", metavar="FILE"),
    )
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_period: float = _setting(
        10.0, _GRACE, "GRACE_PERIOD",
        _flag("--grace-period", "seconds to drain calls on SIGTERM (default 10)", type=float, metavar="SECONDS"),
    )
    # Server processes on the same listeners (SO_REUSEPORT), each a full replica; 0: one per core
    # (SQLite, etcd), but one for an edge. 1: a single process, no supervisor.
    workers: int = _setting(
        0, _WORKERS, "WORKERS",
        _flag("--workers", "server processes (default 0: one per core; 1: a single process)", type=int, metavar="N"),
    )
    # The event loop `serve` runs on: "uvloop" (libuv's; fewer microseconds of CPU per call) or
    # "asyncio" (the standard library's). The default is uvloop where it is installed.
    event_loop: str = _setting(
        default_event_loop(), _event_loop, "EVENT_LOOP",
        _flag("--event-loop", "event loop to serve on (default uvloop where installed)", choices=EVENT_LOOPS),
    )
    # debug, info, warning or error.
    log_level: str = _setting(
        "info", _log_level, "LOG_LEVEL", _flag("--log-level", "least severe log lines to write (default info)", choices=_LEVELS)
    )
    # Third-party plugins (entry-point names) to load; None loads all. First-party ones always load.
    plugins_allow: tuple[str, ...] | None = _setting(None, _plugin_names, "PLUGINS_ALLOW", empty_means_none=True)
    # Plugins never to load, first-party ones included (e.g. "exec").
    plugins_block: tuple[str, ...] = _setting((), _plugin_names, "PLUGINS_BLOCK")
    # Fail at start when a plugin cannot load, instead of reporting and skipping it.
    plugins_strict: bool = _setting(False, _bool, "PLUGINS_STRICT")
    # Seconds one provider call may take before it is abandoned and reported UNAVAILABLE.
    provider_timeout: float = _setting(10.0, _TIMEOUT, "PROVIDER_TIMEOUT")
    # Seconds a failed resolution is remembered, so a broken reference cannot hammer a backend.
    provider_failure_ttl: float = _setting(5.0, _TIMEOUT, "PROVIDER_FAILURE_TTL")
    # PEM CA bundle trusted for SMTP TLS and HTTPS token endpoints; None: the system CAs.
    ca_bundle: Path | None = _setting(None, _path, "CA_BUNDLE")
    # Seconds for the SMTP connection, TLS handshake and each SMTP command at apply time.
    smtp_timeout: float = _setting(15.0, _TIMEOUT, "SMTP_TIMEOUT")
    # Send SMTP credentials over a connection without TLS (never, unless this is true).
    allow_plaintext_auth: bool = _setting(False, _bool, "ALLOW_PLAINTEXT_AUTH")
    # Ports where UseSSL means implicit TLS (TLS from the first byte); STARTTLS on all others.
    implicit_tls_ports: tuple[int, ...] = _setting((465,), _ports, "IMPLICIT_TLS_PORTS")
    # Provider instances declared in the config file ([[providers]] tables); read-only via the API.
    providers: tuple[dict[str, Any], ...] = _setting((), _file_providers)
    # What provider instances made through the API may reach on this host (declared ones are the
    # operator's own and exempt). Commands an `exec` instance may run, each [absolute program,
    # fixed leading arguments...]: its Command must start with one of them. Empty: none.
    exec_commands: tuple[tuple[str, ...], ...] = _setting((), _exec_commands, "EXEC_COMMANDS")
    # Directories a `file` instance's Directory may be, or be under. Empty: none.
    file_directories: tuple[Path, ...] = _setting((), _directories, "FILE_DIRECTORIES")
    # Directories every other path-valued parameter (JwtFile, CaBundle, WorkingDirectory, ...)
    # may point into. Empty: none. The data directory is never reachable, whatever is listed.
    path_directories: tuple[Path, ...] = _setting((), _directories, "PATH_DIRECTORIES")
    # Environment variable names an API-made instance may set for its command (an `exec`
    # instance's Environment), matched exactly. Empty: none. Names that decide which code a
    # program loads (LD_PRELOAD, PATH, ...) cannot be listed.
    exec_environment: tuple[str, ...] = _setting((), _variable_names, "EXEC_ENVIRONMENT")

    # --- transport ---
    # Server certificate chain and key (PEM) for every TCP listener; re-read when the files change.
    tls_cert_file: Path | None = _setting(
        None, _path, "TLS_CERT_FILE",
        _flag("--tls-cert", "server certificate chain (PEM) for TCP listeners; enables TLS", metavar="FILE"),
    )
    tls_key_file: Path | None = _setting(
        None, _path, "TLS_KEY_FILE", _flag("--tls-key", "key of the server certificate (PEM)", metavar="FILE")
    )
    # CA bundle for client certificates: when set, every TCP caller must present one (mTLS).
    tls_client_ca_file: Path | None = _setting(
        None, _path, "TLS_CLIENT_CA_FILE",
        _flag("--tls-client-ca", "CA bundle for client certificates; enables mTLS", metavar="FILE"),
    )
    # Listen on a non-loopback address without TLS (never, unless this is true).
    allow_insecure_listen: bool = _setting(False, _bool, "ALLOW_INSECURE_LISTEN")
    # Unix socket file mode (octal) and group: the socket's permissions are its access boundary.
    unix_socket_mode: int = _setting(0o600, _socket_mode, "UNIX_SOCKET_MODE")
    unix_socket_group: str = _setting("", _socket_group, "UNIX_SOCKET_GROUP")
    # Plaintext listener serving only grpc.health.v1 (for probes that cannot do TLS); "" for none.
    health_listen: str = _setting("", _optional_address, "HEALTH_LISTEN")

    # --- callers ---
    # Identity given to Unix socket callers that bring no token; "" means they must bring one.
    unix_socket_identity: str = _setting("", _socket_identity, "UNIX_SOCKET_IDENTITY")
    # Keep an admin bearer token in <data_dir>/admin.token (0600), created when missing, for the
    # identity "admin" with every permission. The CLI finds it there on its own.
    admin_token: bool = _setting(True, _bool, "ADMIN_TOKEN")
    # Bearer tokens by identity: [[tokens]] tables with `identity` and `sha256` (hex of the token).
    tokens: tuple[tuple[str, str], ...] = _setting((), _file_tokens)
    # Which identity holds which permissions: [policy] table, identity = ["smtp:read", ...].
    policy: tuple[tuple[str, tuple[str, ...]], ...] = _setting((), _file_policy)

    # --- observability ---
    # host:port of the Prometheus /metrics endpoint; "" for none.
    metrics_listen: str = _setting(
        "", _optional_address, "METRICS_LISTEN", _flag("--metrics-listen", "serve Prometheus metrics here", metavar="HOST:PORT")
    )
    # text or json (one object per line, with the request id of the call being served).
    log_format: str = _setting(
        "text", _log_format, "LOG_FORMAT", _flag("--log-format", "log lines as text (default) or JSON", choices=_LOG_FORMATS)
    )
    # Seconds between store reachability checks; health turns NOT_SERVING while the store fails.
    readiness_interval: float = _setting(5.0, _INTERVAL, "READINESS_INTERVAL")
    # Days audit records are kept; older ones are deleted hourly. 0 keeps them all.
    audit_retention_days: float = _setting(0.0, _DAYS, "AUDIT_RETENTION_DAYS")
    # Calls of one identity that end before their method starts (refused, cancelled, out of time)
    # and get an audit record (per second, burst); more are only counted in the metrics. A rate of
    # 0 records every one.
    audit_refusals_rate: float = _setting(1.0, _REFUSALS_RATE, "AUDIT_REFUSALS_RATE")
    audit_refusals_burst: int = _setting(100, _BURST, "AUDIT_REFUSALS_BURST")
    # This replica's name: its audit log is <data_dir>/audit/<replica_name>.jsonl and its records
    # say who wrote them. "" derives one: the host name, and the first listen port when fixed.
    replica_name: str = _setting("", _replica_name, "REPLICA_NAME")
    # Size at which the audit log is rotated (renamed <replica>.<8-digit number>.jsonl), and how
    # many rotated files are kept (the oldest beyond are deleted).
    audit_max_bytes: int = _setting(64 * 1024 * 1024, _AUDIT_BYTES, "AUDIT_MAX_BYTES")
    audit_keep_files: int = _setting(10, _KEEP_FILES, "AUDIT_KEEP_FILES")
    # "interval": fsync the audit log at most once a second (a kill -9 loses nothing, a power
    # loss the last second at most); "batch": fsync each group of records before answering.
    audit_fsync: str = _setting("interval", _audit_fsync, "AUDIT_FSYNC")
    # Also copy every audit record (changes too) to standard output, one JSON object a line.
    audit_stdout: bool = _setting(False, _bool, "AUDIT_STDOUT")

    # --- limits ---
    # Largest request message accepted, in bytes.
    max_message_bytes: int = _setting(1024 * 1024, _MESSAGE_BYTES, "MAX_MESSAGE_BYTES")
    # Seconds a call that brings no deadline may run.
    default_deadline: float = _setting(30.0, _INTERVAL, "DEFAULT_DEADLINE")
    # Calls served at once; more are refused with RESOURCE_EXHAUSTED. 0: no limit.
    max_concurrent_rpcs: int = _setting(1000, _COUNT, "MAX_CONCURRENT_RPCS")
    # Calls one identity may have in progress at once, so that no caller can take every slot.
    # 0: no limit of its own (max_concurrent_rpcs still applies).
    max_concurrent_rpcs_per_identity: int = _setting(100, _COUNT, "MAX_CONCURRENT_RPCS_PER_IDENTITY")
    # Per-identity token buckets (calls per second, burst). A rate of 0 means no limit.
    # ResolveSmtp and CheckSecret share the resolve bucket: both reveal what a secret holds.
    resolve_rate: float = _setting(10.0, _RATE, "RESOLVE_RATE")
    resolve_burst: int = _setting(20, _BURST, "RESOLVE_BURST")
    test_rate: float = _setting(0.5, _RATE, "TEST_RATE")
    test_burst: int = _setting(5, _BURST, "TEST_BURST")
    # At most one ResolveSmtp with `refresh` (past every cache) per identity in this many seconds.
    refresh_interval_seconds: float = _setting(10.0, _INTERVAL, "REFRESH_INTERVAL_SECONDS")

    # --- WatchSmtp ---
    # Seconds between progress messages (the store's current revision) on every WatchSmtp stream.
    watch_progress_seconds: float = _setting(30.0, _INTERVAL, "WATCH_PROGRESS_SECONDS")
    # Seconds a WatchSmtp stream lives (±10% jitter) before it ends UNAVAILABLE, so that clients
    # reconnect (with their revision) and spread over replicas again.
    watch_max_age_seconds: float = _setting(600.0, _INTERVAL, "WATCH_MAX_AGE_SECONDS")
    # WatchSmtp streams one identity may hold open at once; 0: no limit. They do not count
    # against max_concurrent_rpcs_per_identity, which is for calls that end.
    max_watch_streams_per_identity: int = _setting(8, _COUNT, "MAX_WATCH_STREAMS_PER_IDENTITY")
    # SQLite (an edge: revisions followed, in memory): changes kept so that a WatchSmtp client can
    # resume after its revision; one resuming from before the oldest kept gets a resync snapshot.
    history_keep: int = _setting(1000, _BURST, "HISTORY_KEEP")
    # --- store ---
    # Where the profile and provider instances live: "sqlite" (the embedded default, one server
    # per data directory) or "etcd" (cluster mode: several replicas on one etcd cluster).
    store: str = _setting(
        "sqlite", _store, "STORE", _flag("--store", "sqlite (default) or etcd (cluster mode)", choices=_STORES)
    )
    # etcd members (host:port, comma-separated); the store moves to the next when one fails.
    etcd_endpoints: tuple[str, ...] = _setting(
        (), _endpoints, "ETCD_ENDPOINTS",
        _flag("--etcd-endpoints", "etcd members host:port, comma-separated (store = etcd)", metavar="LIST"),
    )
    # Key prefix of everything this deployment keeps in etcd (one prefix per deployment).
    etcd_prefix: str = _setting("/smtpconfig/", _etcd_prefix, "ETCD_PREFIX")
    # TLS to etcd: the CA bundle that signs the members' certificates (enables TLS), and a client
    # certificate and key when the cluster requires them (--client-cert-auth).
    etcd_ca_file: Path | None = _setting(None, _path, "ETCD_CA_FILE")
    etcd_cert_file: Path | None = _setting(None, _path, "ETCD_CERT_FILE")
    etcd_key_file: Path | None = _setting(None, _path, "ETCD_KEY_FILE")
    # etcd user (when the cluster has auth enabled) and the file holding its password.
    etcd_user: str = _setting("", _etcd_user, "ETCD_USER")
    etcd_password_file: Path | None = _setting(None, _path, "ETCD_PASSWORD_FILE")
    # Seconds one attempt of an etcd call may take; a call makes at most 3 attempts.
    etcd_timeout: float = _setting(2.0, _TIMEOUT, "ETCD_TIMEOUT")

    # --- edge mode ---
    # host:port of a central smtpconfig (several comma-separated: the next one on UNAVAILABLE).
    # Set, this server is an edge: no store and no providers of its own; it follows the upstream.
    upstream: tuple[str, ...] = _setting(
        (), _upstream, "UPSTREAM", _flag("--upstream", "follow this central smtpconfig (edge mode)", metavar="LIST"),
    )
    # TLS to the upstream: CA bundle of its certificate (enables TLS), and this edge's client
    # certificate and key when the upstream asks for one (mTLS).
    upstream_ca_file: Path | None = _setting(None, _path, "UPSTREAM_CA_FILE")
    upstream_cert_file: Path | None = _setting(None, _path, "UPSTREAM_CERT_FILE")
    upstream_key_file: Path | None = _setting(None, _path, "UPSTREAM_KEY_FILE")
    # File holding the bearer token this edge calls the upstream with.
    upstream_token_file: Path | None = _setting(None, _path, "UPSTREAM_TOKEN_FILE")
    # Identities of edges whose `x-smtpconfig-on-behalf-of` header this server trusts and names
    # in its audit records ("edge-a for billing-app"); from anyone else the header is ignored.
    edge_identities: tuple[str, ...] = _setting((), _identities, "EDGE_IDENTITIES")

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
    def replica(self) -> str:
        """`replica_name`, or one derived from the host name and the first fixed listen port:
        stable across restarts of the same server, different for servers on one host."""
        if self.replica_name:
            return self.replica_name
        host = re.sub(r"[^A-Za-z0-9._-]", "-", gethostname())[:48].strip(".-_") or "replica"
        ports = [split_address(a)[1] for a in self.listen]
        return f"{host}-{ports[0]}" if ports and ports[0] else host

    @property
    def processes(self) -> int:
        """How many server processes `serve` runs: `workers`, or when 0 one per core this process
        may run on; an edge (`upstream`) and a server without a TCP listener run one: a sidecar is
        small, each worker would follow the upstream itself, and the Unix socket is served by one."""
        if self.workers:
            return self.workers
        if self.upstream or not self.listen:
            return 1
        return len(os.sched_getaffinity(0))

    @property
    def key_is_generated(self) -> bool:
        """The embedded default: a key file in the data directory, created when missing."""
        return self.key_file is None


# The table, read off the fields: every setting by name, in the order they are declared.
TABLE: Mapping[str, Setting] = {f.name: f.metadata[Setting] for f in fields(Settings) if Setting in f.metadata}
# Each setting's environment variable, and its `serve` flag.
ENV_VARS: Mapping[str, str] = {name: ENV_PREFIX + s.env for name, s in TABLE.items() if s.env is not None}
FLAGS: Mapping[str, Flag] = {name: s.flag for name, s in TABLE.items() if s.flag is not None}
_DEFAULTS = Settings()


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge every source and check the result. `config_file` defaults to $SMTPCONFIG_CONFIG.
    `flags` are by setting name (`FLAGS`); None stands for a flag not given."""
    env = os.environ if env is None else env
    settings = Settings()
    sources = ["defaults"]
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        settings = _apply(settings, _read_toml(path), f"config file {path}", base=path.parent)
        sources.append(str(path))
    from_env = {name: env[var] for name, var in ENV_VARS.items() if var in env}
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


def _cleared(settings: Settings, from_env: dict[str, str]) -> Settings:
    """`settings` with each setting given as an empty variable back at its default (unless empty
    means none for it); those variables are taken out of `from_env`."""
    cleared = [name for name, value in from_env.items() if not value.strip() and not TABLE[name].empty_means_none]
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
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in TABLE:
            raise SettingsError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(TABLE))})")
        changes[name] = TABLE[name].kind(value, f"{origin}: {name}", base, text)
    return replace(settings, **changes)


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
    if settings.workers > 1 and not settings.listen:
        raise SettingsError(
            f"workers = {settings.workers} needs a TCP listen address: the Unix socket is served by one process"
        )
    if settings.store == "etcd" and not settings.etcd_endpoints:
        raise SettingsError("store = etcd needs etcd_endpoints (host:port of the etcd members, comma-separated)")
    if (settings.etcd_cert_file is None) != (settings.etcd_key_file is None):
        raise SettingsError("etcd_cert_file and etcd_key_file go together: set both or neither")
    if (settings.upstream_cert_file is None) != (settings.upstream_key_file is None):
        raise SettingsError("upstream_cert_file and upstream_key_file go together: set both or neither")
    if settings.upstream and settings.providers:
        raise SettingsError("an edge (upstream is set) holds no provider instances: remove [[providers]]")
    if settings.upstream and settings.store != "sqlite":
        raise SettingsError("an edge (upstream is set) has no store of its own: remove store")
    if settings.upstream_token_file is not None and settings.upstream_ca_file is None:
        remote = [a for a in settings.upstream if not is_loopback(split_address(a)[0])]
        if remote:
            raise SettingsError(
                f"upstream_token_file would be sent in clear to {', '.join(remote)}: set upstream_ca_file"
                " (TLS to the upstream), or follow an upstream on this machine's loopback"
            )
    if settings.etcd_user and settings.etcd_password_file is None:
        raise SettingsError("etcd_user needs etcd_password_file (the password is read from a file, never a setting)")
