"""The public plugin API of smtpconfig: everything a secret provider plugin needs, in one module.

A plugin is an importable module with a hook implementation::

    from smtpconfig.plugin import Parameter, Resolved, SecretProvider, hookimpl


    class EnvProvider(SecretProvider):
        name = "env"
        display_name = "Environment variable"
        parameters = (Parameter("Variable", instance_level=True, description="which variable"),)

        def resolve(self, instance_parameters, initialization):
            ...
            return Resolved(Secret(value), ttl=60)


    @hookimpl
    def register_secret_providers(register):
        register(EnvProvider)

and an entry point in group ``smtpconfig`` naming that module. The contract mirrors Keyfactor's
``IPAMProvider.GetPassword(instanceParameters, initializationInfo)``, so a Keyfactor PAM extension
ports mechanically: its instance parameters arrive as `instance_parameters`, its initialization
info as `initialization`. See docs/plugins.md for the whole walk-through.

Messages a provider raises must hold no secret: `mask_secrets` masks the credentials it obtained
at run time (a login's token, a key read from a file), which the service cannot know of.

Stability: names in ``__all__`` are the API; they change only with a new major version.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import pluggy

from smtpconfig.core import netguard
from smtpconfig.core.errors import Unavailable
from smtpconfig.core.scrub import Scrubber
from smtpconfig.core.secret import Secret

PROJECT = "smtpconfig"

#: Marks a function in a plugin module as a hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)

DataType = Literal["string", "secret"]

#: What an initialization parameter's value is, so the host can guard it for every provider type:
#: ``"text"`` (anything else), ``"path"`` (a file or directory on the server's host),
#: ``"command"`` (a program and its arguments, see `command_argv`), ``"environment"`` (a JSON
#: object of variables for a program the provider runs) or ``"destination"`` (where the provider
#: connects: a URL, host or address).
ParameterKind = Literal["text", "path", "command", "environment", "destination"]
_KINDS = ("text", "path", "command", "environment", "destination")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a provider type (Keyfactor's PAM provider type parameter).

    Initialization parameters (``instance_level=False``) say how to reach the backend and are set
    once on a provider instance; instance parameters (``instance_level=True``) say which secret to
    read and are set on each secret object that references the instance.
    """

    #: The key used in JSON, TOML and `Parameters` maps, e.g. ``"Host"``.
    name: str
    #: Shown to people; defaults to `name`.
    display_name: str = ""
    #: ``"secret"`` values are encrypted at rest, never returned, and reach `resolve` as `Secret`.
    data_type: DataType = "string"
    #: True for instance parameters, False for initialization parameters.
    instance_level: bool = False
    #: A required parameter must be given and non-empty.
    required: bool = True
    #: One sentence for people configuring it.
    description: str = ""
    #: Used when the parameter is not given (only for optional parameters).
    default: str | None = None
    #: Other names accepted on input and mapped to `name` (e.g. Keyfactor's names).
    aliases: tuple[str, ...] = ()
    #: What the value is (see `ParameterKind`). For instances made through the API, the host checks
    #: ``"path"`` and ``"command"`` values against the operator's allowlists and ``"environment"``
    #: values against loader and interpreter variables, when they are written and again before
    #: every `resolve`; a ``"destination"`` written as a forbidden address (link-local, cloud
    #: metadata, in any spelling) is refused when written, and the provider checks names with
    #: `check_destination` where it connects. Only initialization parameters have a kind other
    #: than ``"text"``.
    kind: ParameterKind = "text"
    #: True when changing this parameter changes who receives the instance's secret
    #: initialization values (an auth method, a namespace, a CA bundle). An update that changes it
    #: must send those secret values again. Always true for ``"destination"``, ``"command"`` and
    #: ``"environment"`` parameters.
    binds_secrets: bool = False

    def __post_init__(self) -> None:
        if self.data_type not in ("string", "secret"):
            raise ValueError(f"parameter {self.name}: data_type must be 'string' or 'secret'")
        if self.data_type == "secret" and self.instance_level:
            raise ValueError(f"parameter {self.name}: instance parameters name a secret, they are not one")
        if self.kind not in _KINDS:
            raise ValueError(f"parameter {self.name}: kind must be one of {', '.join(_KINDS)}")
        if self.kind != "text" and (self.instance_level or self.data_type == "secret"):
            # The host must read the value to guard it, and instance parameters are chosen by
            # whoever references the instance: a provider confines those itself.
            raise ValueError(f"parameter {self.name}: only string initialization parameters can be of kind {self.kind}")
        if self.kind in ("destination", "command", "environment"):
            object.__setattr__(self, "binds_secrets", True)
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)


@dataclass(frozen=True)
class Resolved:
    """What `SecretProvider.resolve` returns: the value and how long it may be cached."""

    #: The secret value.
    value: Secret
    #: Seconds the value may be cached; None: the instance's or the type's default TTL.
    ttl: float | None = None
    #: The backend's lease id, when it gives one (the value is cached for at most the lease).
    lease_id: str | None = None
    #: A backend version label (e.g. a KV version), reported by CheckSecret; never the value.
    version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.value, Secret):
            raise TypeError("Resolved.value must be a Secret; wrap the value with Secret(...)")
        if self.ttl is not None and self.ttl < 0:
            raise ValueError("Resolved.ttl cannot be negative")


#: The value of an initialization parameter: a str, or a `Secret` for ``data_type="secret"``.
InitializationValue = str | Secret


def command_argv(value: str, name: str = "Command") -> list[str]:
    """The argument vector a ``kind="command"`` value states: a JSON array of strings when it
    starts with ``[``, otherwise a command line split as a POSIX shell would (and never run by
    one). The host checks commands with this function, so a provider must run what it returns.

    Raises:
        BadParameters: naming parameter `name`, when the value is not a valid command, names no
            program, or holds a NUL.
    """
    raw = value.strip()
    argv: object
    if raw.startswith("["):
        try:
            argv = json.loads(raw)
        except (ValueError, RecursionError):  # a decode error repeats the document: never let it escape
            argv = None
        if not (isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)):
            raise BadParameters(f"{name} must be a JSON array of strings", parameter=name)
    else:
        try:
            argv = shlex.split(raw)
        except ValueError:
            raise BadParameters(f"{name} is not a valid command line (unbalanced quotes?)", parameter=name) from None
    if not argv or not argv[0]:
        raise BadParameters(f"{name} must name a program", parameter=name)
    if any("\0" in arg for arg in argv):
        raise BadParameters(f"{name} contains a NUL character", parameter=name)
    return list(argv)


class SecretProvider:
    """Base class of a provider type. The service creates one object per provider instance.

    Subclasses set the class attributes and implement `resolve`. `resolve` may be a plain method
    (it then runs on a worker thread, so blocking I/O is fine) or ``async def``. The service calls it
    concurrently, caches results, shares one call between concurrent requests for the same
    reference, and abandons a call after the instance's timeout; keep backend timeouts at or below
    `timeout` so abandoned calls end too.
    """

    #: Type name referenced by provider instances, e.g. ``"vault"``. Letters, digits, ``-``, ``_``.
    name: ClassVar[str]
    #: Name shown to people.
    display_name: ClassVar[str] = ""
    #: One paragraph for people choosing a provider.
    description: ClassVar[str] = ""
    #: Initialization and instance parameters.
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    #: Seconds a resolved value is cached when `Resolved.ttl` is None and the instance sets none.
    default_ttl: ClassVar[float] = 300.0

    def __init__(self, *, timeout: float = 10.0) -> None:
        #: Seconds the service waits for one `resolve` call.
        self.timeout = timeout

    def resolve(
        self, instance_parameters: Mapping[str, str], initialization: Mapping[str, InitializationValue]
    ) -> Resolved:
        """Read one secret.

        Args:
            instance_parameters: the instance-level parameters of the secret object, by canonical
                name, optional ones filled with their defaults.
            initialization: the provider instance's initialization values, by canonical name;
                secret-typed ones as `Secret`.

        Returns:
            `Resolved` (a bare `str` or `Secret` is accepted too and cached for the default TTL).

        Raises:
            SecretNotFound, AccessDenied, ProviderUnavailable, BadParameters: as the backend
            answers. Messages must never contain a secret value. Any other exception is reported
            as the provider being unavailable.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Called when the instance is changed or deleted and at shutdown."""


# --- errors -------------------------------------------------------------------------------------


class ProviderError(Exception):
    """Base of the errors a provider raises. Messages are shown to callers: never put a secret
    value in one (names of paths and keys are fine)."""


class SecretNotFound(ProviderError):
    """The backend has no such secret, key or version."""


class AccessDenied(ProviderError):
    """The backend refused the provider's credentials or their permissions."""


class ProviderUnavailable(ProviderError):
    """The backend cannot be reached, is sealed, or timed out; a later retry may work."""


class BadParameters(ProviderError):
    """The parameters cannot work (wrong format, unknown mode). `parameter` names the culprit."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


# --- outbound connections -----------------------------------------------------------------------


class DestinationRefused(ProviderError, netguard.RefusedDestination):
    """The destination resolves to a link-local or cloud metadata address (in any spelling: mapped,
    NAT64, 6to4, Teredo, ...). Callers are told FAILED_PRECONDITION with this message."""


def check_destination(host: str, port: int, *, what: str) -> tuple[str, ...]:
    """Check a destination before connecting to it, and return the IP addresses to dial.

    A provider that connects anywhere calls this for every new connection, from `resolve` (or
    code it calls on the same worker thread), and then connects to one of the returned addresses,
    never to `host` again: a second lookup could answer differently (DNS rebinding). Keep `host`
    for the HTTP ``Host`` header, TLS SNI and certificate verification.

    Args:
        host: a host name, or an IPv4 or IPv6 address (with or without brackets).
        port: the port that will be dialled.
        what: how messages name the destination, e.g. ``"Vault Host"``.

    Returns:
        The checked addresses as strings (IPv6 without brackets), in resolver order.

    Raises:
        DestinationRefused: an answer is a forbidden address; the whole name is refused.
        ProviderUnavailable: the name cannot be resolved.
    """
    try:
        destination = netguard.check_destination_blocking(host, port, what=what)
    except netguard.RefusedDestination as error:
        raise DestinationRefused(str(error)) from None
    except Unavailable as error:
        raise ProviderUnavailable(str(error)) from None
    return tuple(str(address) for address in destination.addresses)


# --- messages -----------------------------------------------------------------------------------


def mask_secrets(text: object, *values: Secret | str) -> str:
    """`text` fit for a message, with every one of `values` masked.

    For the backend's own words and for anything holding a credential the service does not know
    of: one your provider read from a file, or a token a login returned. Each value is masked as
    plain text, base64 and URL-encoded, in any letter case; the text comes back on one line and
    cut to 300 characters (masking comes first, so a cut leaves no piece of a value behind).
    Empty values are ignored. The service masks the instance's secret initialization values
    again before a message reaches anyone.
    """
    return Scrubber(*values).clean(text)


#: What a plugin's ``register_secret_providers`` hook receives: call it once per provider class.
Register = Callable[[type[SecretProvider]], None]

__all__ = [
    "AccessDenied",
    "BadParameters",
    "DataType",
    "DestinationRefused",
    "InitializationValue",
    "Parameter",
    "ParameterKind",
    "ProviderError",
    "ProviderUnavailable",
    "Register",
    "Resolved",
    "Secret",
    "SecretNotFound",
    "SecretProvider",
    "check_destination",
    "command_argv",
    "hookimpl",
    "mask_secrets",
]
