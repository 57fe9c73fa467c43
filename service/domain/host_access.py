"""What provider instances made through the API may reach on the server's host.

`providers:modify` configures instances, and parameters can name programs and files on this host.
The operator lists in the server's config, never through the API, what they may be: settings
`exec_commands`, `file_directories` and `path_directories`. The host checks each initialization
parameter by the kind its provider declares (`smtpconfig.plugin.Parameter.kind`), so first- and
third-party providers get the same guard. The values are the typed ones a provider receives, so
what is checked is what is used:

- ``command``: the argument vector starts with a listed command, element by element; the trailing
  arguments are the instance's.
- ``path``: absolute, and after following symlinks equal to or under a listed directory:
  `file_directories` for the ``file`` type's paths, `path_directories` for every other.
- ``environment``: only variables `exec_environment` names, exactly; and never one that decides
  which code a program loads (`smtpconfig.core.code_variables`), listed or not. A vendor CLI's settings
  reach somewhere too (VAULT_ADDR, HTTPS_PROXY, SSL_CERT_FILE): with the server's HOME, a CLI
  would send the server user's own credentials where a variable points.
- ``url``: a URL whose host, written as an address in any numeric form, is not one the service
  never connects to (link-local, cloud metadata: `smtpconfig.core.netguard`). Names
  are checked where the provider connects (`smtpconfig.plugin.check_destination`), since what they
  resolve to can change.

Whatever is listed, no path reaches the server's own files: one inside the data directory, the key
file, the Unix socket or the TLS key, or a directory that holds one of them, is refused; so are
/proc, /sys and /dev (/proc/self/environ alone would show SMTPCONFIG_KEY). Instances declared in
the config file are the operator's own: the lists do not apply to them, the server's own files do.
API-made instances cannot reach the files declared instances take their secrets from either.

Checks run when an instance is written (INVALID_ARGUMENT naming ``Initialization.<Name>`` and the
setting that would allow it) and again before every resolution (FAILED_PRECONDITION naming the
instance), because settings shrink across restarts and symlinks change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smtpconfig.core import netguard
from smtpconfig.core.code_variables import controls_code
from smtpconfig.core.errors import FieldViolation, violation
from smtpconfig.plugin import Parameter, ParameterValue
from smtpconfig.settings import Settings

# Kernel views of every process and device: never a directory of files meant for an instance.
SYSTEM_DIRECTORIES = ("/proc", "/sys", "/dev")
# Which setting lists the directories a provider type's paths may point into.
_DIRECTORY_SETTING = {"file": "file_directories"}
_OTHER_PATHS = "path_directories"

@dataclass(frozen=True)
class HostAccess:
    """The operator's allowlists and the server's own files; empty lists allow nothing."""

    exec_commands: tuple[tuple[str, ...], ...] = ()
    exec_environment: frozenset[str] = frozenset()
    file_directories: tuple[Path, ...] = ()
    path_directories: tuple[Path, ...] = ()
    #: The server's own files and directories, by what they are.
    protected: tuple[tuple[str, Path], ...] = ()
    #: Secret files the config file names for declared instances; out of reach of API-made ones.
    secret_files: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> HostAccess:
        own = [("the data directory", settings.data_dir), ("the key file", settings.key_path)]
        if settings.socket_path is not None:
            own.append(("the server's Unix socket", settings.socket_path))
        if settings.tls_key_file is not None:
            own.append(("the server's TLS key", settings.tls_key_file))
        # The files declared instances take their secrets from: the operator's, not the API's.
        secret_files = tuple(
            Path(item["file"]) for table in settings.providers for item in table["initialization"].values()
            if isinstance(item, dict) and "file" in item
        )
        # Resolved once: each check runs on the event loop, and the value checked is resolved anyway.
        return cls(
            settings.exec_commands, frozenset(settings.exec_environment), _real(settings.file_directories),
            _real(settings.path_directories), tuple((what, _real((path,))[0]) for what, path in own),
            _real(secret_files),
        )

    def refusals(
        self, type_name: str, parameters: tuple[Parameter, ...], values: Mapping[str, ParameterValue],
        *, declared: bool = False,
    ) -> list[FieldViolation]:
        """One violation per initialization value this host does not let the instance use.
        `values` are typed as the provider receives them (`smtpconfig.plugin.values_for`).
        `declared`: the instance comes from the config file; only the server's own files count."""
        found = []
        for parameter in parameters:
            value = values.get(parameter.name)
            if parameter.instance_level or value is None:
                continue
            problem = self._problem(type_name, parameter, value, declared)
            if problem:
                found.append(violation(f"Initialization.{parameter.name}", problem))
        return found

    def _problem(self, type_name: str, parameter: Parameter, value: ParameterValue, declared: bool) -> str:
        if parameter.kind == "path" and isinstance(value, str):
            return self._path_problem(value, _DIRECTORY_SETTING.get(type_name, _OTHER_PATHS), declared)
        if parameter.kind == "url" and isinstance(value, str):
            return _destination_problem(value)
        if declared:
            return ""
        if parameter.kind == "command" and isinstance(value, tuple):
            return self._command_problem(value)
        if parameter.kind == "environment" and isinstance(value, Mapping):
            return _environment_problem(value, self.exec_environment)
        return ""

    def _command_problem(self, argv: tuple[str, ...]) -> str:
        if not self.exec_commands:
            return ("is refused: exec_commands in the server's config lists no command that provider"
                    " instances made through the API may run")
        if any(argv[: len(prefix)] == prefix for prefix in self.exec_commands):
            return ""
        listed = "; ".join(json.dumps(list(prefix)) for prefix in self.exec_commands)
        return f"must start with a command listed in exec_commands in the server's config: {listed}"

    def _path_problem(self, value: str, setting: str, declared: bool) -> str:
        # Absolute and without surrounding white space: the kind's own rule has made sure.
        real = os.path.realpath(value)
        for what, path in self.protected:
            if _overlap(real, path):
                return f"reaches {what}, which no provider instance may read"
        for system in SYSTEM_DIRECTORIES:
            if _within(real, system):
                return f"is under {system}, which no provider instance may read"
        if declared:
            return ""
        if any(_overlap(real, path) for path in self.secret_files):
            return "reaches a secret file of a provider instance declared in the server's config"
        if not any(_within(real, str(d)) for d in getattr(self, setting)):
            return (f"is not under a directory listed in {setting} in the server's config"
                    " (symlinks followed)")
        return ""


def _real(paths: tuple[Path, ...]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(path)) for path in paths)


def _overlap(real: str, path: Path) -> bool:
    """`real` is `path`, lies under it, or holds it (a directory holding a file reaches it);
    `path` is already a real path."""
    own = str(path)
    return _within(real, own) or _within(own, real)


def _within(path: str, directory: str) -> bool:
    """`path` is `directory` or under it; both are real paths."""
    return path == directory or os.path.commonpath((path, directory)) == directory


def _destination_problem(value: str) -> str:
    """A URL whose host is an address the service never connects to, in any form."""
    try:
        host = urlsplit(value).hostname
    except ValueError:
        return ""  # the kind's own rule has read it already
    return netguard.numeric_refusal(host) or "" if host else ""


def _environment_problem(variables: Mapping[str, str], allowed: frozenset[str]) -> str:
    refused = sorted(name for name in variables if controls_code(name))
    if refused:
        return (f"sets {', '.join(refused)}, which decide what code a program loads; provider"
                " instances made through the API cannot set them")
    # Exact names: the environment is case-sensitive, and a CLI's settings are reach too.
    unlisted = sorted(name for name in variables if name not in allowed)
    if unlisted:
        return (f"sets {', '.join(unlisted)}, which exec_environment in the server's config does not list;"
                " provider instances made through the API may set only the variables it names")
    return ""
