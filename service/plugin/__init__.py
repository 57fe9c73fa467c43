"""The public plugin API of smtpconfig: everything a secret provider plugin needs, in one module.

A plugin is an importable module with a hook implementation::

    from smtpconfig.plugin import Parameter, Resolved, SecretProvider, hookimpl


    class EnvProvider(SecretProvider):
        name = "env"
        display_name = "Environment variable"
        parameters = (
            Parameter("TtlSeconds", kind="seconds", required=False, default="60", minimum=0,
                      description="how long a value may be cached"),
            Parameter("Variable", instance_level=True, description="which variable"),
        )

        def resolve(self, instance_parameters, initialization):
            value = os.environ.get(instance_parameters["Variable"])
            ...
            return Resolved(Secret(value), ttl=initialization["TtlSeconds"])  # a float already


    @hookimpl
    def register_secret_providers(register):
        register(EnvProvider)

and an entry point in group ``smtpconfig`` naming that module. The contract mirrors Keyfactor's
``IPAMProvider.GetPassword(instanceParameters, initializationInfo)``, so a Keyfactor PAM extension
ports mechanically: its instance parameters arrive as `instance_parameters`, its initialization
info as `initialization`. See docs/plugins.md for the whole walk-through.

Each `Parameter` has a kind, and the host checks values by it when an instance or a profile is
written, then hands `resolve` typed values:

=============== ====================================================== ==========================
kind            accepts                                                `resolve` receives
=============== ====================================================== ==========================
``string``      any text (the default)                                 ``str``
``secret``      any text; encrypted at rest, never returned            `Secret`
``bool``        true/false, yes/no, on/off, 1/0 (any letter case)      ``bool``
``int``         a whole number within `minimum`/`maximum`              ``int``
``seconds``     30, 2.5, 90s, 5m, 1h, 1d, 500ms within the bounds      ``float`` seconds
``choice``      one of `choices`, in any letter case                   ``str``, as declared
``url``         a URL with one of `schemes` (the first when omitted)   ``str`` with the scheme
``path``        an absolute path the operator allows (host-guarded)    ``str``
``command``     JSON array or shell-style line the operator allows     ``tuple[str, ...]`` argv
``environment`` JSON object of strings the operator allows             ``Mapping[str, str]``
=============== ====================================================== ==========================

``url``, ``path``, ``command`` and ``environment`` are initialization parameters only: the host
guards them against the operator's allowlists (see README, "Trust model") for every provider type.

Messages a provider raises must hold no secret: `mask_secrets` masks the credentials it obtained
at run time (a login's token, a key read from a file), which the service cannot know of.

Stability: names in ``__all__`` are the API; they change only with a new major version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pluggy

from smtpconfig.core import netguard
from smtpconfig.core.errors import Unavailable
from smtpconfig.core.scrub import Scrubber
from smtpconfig.core.secret import Secret, strip_line_ending
from smtpconfig.plugin.kinds import BINDING, GUARDED, KINDS, ParameterKind
from smtpconfig.plugin.kinds import parse as parse_kind

PROJECT = "smtpconfig"

#: Marks a function in a plugin module as a hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: What `Parameter.data_type` reports, as Keyfactor's PAM DataType does: a secret or not.
DataType = Literal["string", "secret"]


@dataclass(frozen=True)
class Parameter:
    """One parameter of a provider type (Keyfactor's PAM provider type parameter), and what its
    value may be.

    Initialization parameters (``instance_level=False``) say how to reach the backend and are set
    once on a provider instance; instance parameters (``instance_level=True``) say which secret to
    read and are set on each secret object that references the instance.

    The host reads every value by its `kind` when an instance or a profile is written, answering
    INVALID_ARGUMENT naming ``Initialization.<Name>`` or ``Parameters.<Name>``, and hands
    `SecretProvider.resolve` the typed value (see `ParameterKind`); defaults are read the same way
    when the class is defined, so a wrong default fails at import, not at a caller.
    """

    #: The key used in JSON, TOML and `Parameters` maps, e.g. ``"Host"``.
    name: str
    #: Shown to people; defaults to `name`.
    display_name: str = ""
    #: What the value is and what the provider receives (see `ParameterKind`).
    kind: ParameterKind = "string"
    #: True for instance parameters, False for initialization parameters.
    instance_level: bool = False
    #: A required parameter must be given and non-empty.
    required: bool = True
    #: One sentence for people configuring it.
    description: str = ""
    #: The value, as text, used when the parameter is not given (only for optional parameters).
    default: str | None = None
    #: Other names accepted on input and mapped to `name` (e.g. Keyfactor's names).
    aliases: tuple[str, ...] = ()
    #: Bounds of an ``"int"`` or ``"seconds"`` value, inclusive; None: unbounded.
    minimum: float | None = None
    maximum: float | None = None
    #: The values a ``"choice"`` accepts, in the spelling the provider receives (input is matched
    #: without regard to letter case).
    choices: tuple[str, ...] = ()
    #: The schemes a ``"url"`` accepts; a value written without one gets the first.
    schemes: tuple[str, ...] = ("https",)
    #: True when changing this parameter changes who receives the instance's secret
    #: initialization values (an auth method, a namespace, a CA bundle). An update that changes it
    #: must send those secret values again. Always true for ``"url"``, ``"command"`` and
    #: ``"environment"`` parameters.
    binds_secrets: bool = False

    def __post_init__(self) -> None:
        where = f"parameter {self.name}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if self.instance_level and self.kind == "secret":
            raise ValueError(f"{where}: instance parameters name a secret, they are not one")
        if self.instance_level and self.kind in GUARDED:
            # The host guards these for the operator, and instance parameters are chosen by
            # whoever writes the profile: a provider confines those itself.
            raise ValueError(f"{where}: only initialization parameters can be of kind {self.kind}")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"{where}: choices are given for, and only for, kind choice")
        if (self.minimum is not None or self.maximum is not None) and self.kind not in ("int", "seconds"):
            raise ValueError(f"{where}: minimum and maximum apply to kinds int and seconds only")
        if self.kind == "seconds" and self.minimum is not None and self.minimum < 0:
            raise ValueError(f"{where}: a span of seconds is never negative; minimum must be 0 or more")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"{where}: minimum is above maximum")
        if self.kind == "url" and not (self.schemes and all(re.fullmatch(r"[a-z][a-z0-9+.-]*", s) for s in self.schemes)):
            raise ValueError(f"{where}: schemes must be lower-case URL schemes")
        if self.kind in BINDING:
            object.__setattr__(self, "binds_secrets", True)
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        if self.default is not None:
            try:
                self._read(self.default)
            except ValueError as error:
                raise ValueError(f"{where}: the default {self.default!r} {error}") from None

    @property
    def data_type(self) -> DataType:
        """``"secret"`` for kind secret (encrypted at rest, never returned), else ``"string"``."""
        return "secret" if self.kind == "secret" else "string"

    def parse(self, text: str | Secret) -> ParameterValue:
        """The typed value `text` states for this parameter, as the host hands it to `resolve`.

        Raises:
            BadParameters: naming this parameter, when the value is not one this parameter takes.
        """
        try:
            return self._read(text)
        except ValueError as error:
            raise BadParameters(f"{self.name} {error}", parameter=self.name) from None

    def _read(self, text: str | Secret) -> ParameterValue:
        """`parse`, with the problem as a ValueError phrased to follow the parameter's name."""
        return parse_kind(  # type: ignore[return-value]
            self.kind, text, minimum=self.minimum, maximum=self.maximum, choices=self.choices, schemes=self.schemes
        )


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


#: What a parameter's value is when a provider receives it, by kind: ``str`` (string, choice, url,
#: path), `Secret` (secret), ``bool``, ``int``, ``float`` (seconds), ``tuple[str, ...]`` (command),
#: ``Mapping[str, str]`` (environment).
ParameterValue = str | Secret | bool | int | float | tuple[str, ...] | Mapping[str, str]


def strip_newline(text: str) -> str:
    """`text` without one trailing ``\\n`` or ``\\r\\n`` and nothing else: what editors and ``echo``
    add after a value in a file or a program's output (``"a\\n\\n"`` gives ``"a\\n"``, ``"a "`` stays)."""
    return strip_line_ending(text)


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

    def resolve(self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]) -> Resolved:
        """Read one secret.

        Args:
            instance_parameters: the instance-level parameters of the secret object, by canonical
                name, typed by kind (see `ParameterValue`: values are typed `Any` here so a
                provider reads them without casts), optional ones filled with their
                defaults; an optional one without a default is absent.
            initialization: the provider instance's initialization values, the same way; ``secret``
                ones as `Secret`. Both were checked by the host; check only what their kinds
                cannot say (see `check_initialization`).

        Returns:
            `Resolved` (a bare `str` or `Secret` is accepted too and cached for the default TTL).

        Raises:
            SecretNotFound, AccessDenied, ProviderUnavailable, BadParameters: as the backend
            answers. Messages must never contain a secret value. Any other exception is reported
            as the provider being unavailable.
        """
        raise NotImplementedError

    @classmethod
    def check_initialization(cls, initialization: Mapping[str, Any]) -> None:
        """Check rules that join several initialization values (an auth method that needs a
        credential, two settings that contradict each other). Optional; the default accepts all.

        The host calls it when an instance is written, with the typed values as `resolve` gets
        them (after each was checked by its kind), and answers INVALID_ARGUMENT naming
        ``Initialization.<parameter>`` of the `BadParameters` raised. It runs on the event loop:
        never do I/O here (a path's existence, a backend call); `resolve` finds those.

        Raises:
            BadParameters: naming the parameter to change; the message must hold no secret.
        """

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


def values_for(
    parameters: Iterable[Parameter], given: Mapping[str, str | Secret], *, instance_level: bool,
) -> dict[str, ParameterValue]:
    """The typed values `resolve` receives for `given` text: by canonical name (aliases are
    mapped), each read by its parameter's kind, optional ones not given filled with their default.
    Empty values count as not given. What the host does before every call, for test suites.

    Raises:
        BadParameters: naming the first parameter whose value its kind does not take, or a
            required one not given.
    """
    level = [p for p in parameters if p.instance_level == instance_level]
    names = {alias: p for p in level for alias in (p.name, *p.aliases)}
    values: dict[str, ParameterValue] = {}
    for key, text in given.items():
        parameter = names.get(key)
        if parameter is not None and text != "" and parameter.name not in values:
            values[parameter.name] = parameter.parse(text)
    for parameter in level:
        if parameter.name in values:
            continue
        if parameter.default is not None:
            values[parameter.name] = parameter.parse(parameter.default)
        elif parameter.required:
            raise BadParameters(f"{parameter.name} is required", parameter=parameter.name)
    return values


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
    "Parameter",
    "ParameterKind",
    "ParameterValue",
    "ProviderError",
    "ProviderUnavailable",
    "Register",
    "Resolved",
    "Secret",
    "SecretNotFound",
    "SecretProvider",
    "check_destination",
    "hookimpl",
    "mask_secrets",
    "strip_newline",
    "values_for",
]
