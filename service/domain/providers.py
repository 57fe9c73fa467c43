"""Secret provider instances: the model, its rules, and its stored form.

An instance is a configured provider type: an integer Id, a unique name, the type, and the
initialization values (secret-typed ones sealed at rest and never returned). Instances come from
the API (stored) or from the server's config file (declared, read-only through the API).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from smtpconfig.core.bidi import RULE as BIDI_RULE
from smtpconfig.core.bidi import has_bidi_control
from smtpconfig.core.errors import FieldViolation, InvalidArgument, violation
from smtpconfig.core.secret import Secret
from smtpconfig.domain.catalog import ProviderTypes, canonical_names, problem_of
from smtpconfig.domain.crypto import Sealer
from smtpconfig.plugin import BadParameters, Parameter, ParameterValue, SecretProvider, values_for

PROVIDER_PREFIX = "providers/"
MAX_NAME = 128
MAX_INIT_VALUE = 65536
API, CONFIG = "api", "config"
# Provider types that exist only implicitly (inline values); no instance can be made of them.
IMPLICIT_TYPES = frozenset({"inline"})


def provider_key(provider_id: int) -> str:
    return f"{PROVIDER_PREFIX}{provider_id:010d}"


@dataclass(frozen=True)
class ProviderInstance:
    """A valid provider instance. `initialization` holds canonical names; secret values as Secret."""

    id: int
    name: str
    type_name: str
    initialization: Mapping[str, str | Secret] = field(default_factory=dict)
    source: str = API
    etag: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "initialization", MappingProxyType(dict(self.initialization)))


@dataclass(frozen=True)
class InstanceDraft:
    """An instance as a request states it. `initialization` values: str, or None to clear."""

    name: str = ""
    type_name: str = ""
    initialization: Mapping[str, str] = field(default_factory=dict)


def validate_instance(
    draft: InstanceDraft,
    plugins: ProviderTypes,
    *,
    provider_id: int,
    taken_names: set[str],
    keep: Mapping[str, str | Secret] | None = None,
    source: str = API,
) -> ProviderInstance:
    """The valid instance a draft states, or InvalidArgument listing every bad field.

    `keep` holds stored values a masked update did not touch (secret values are never resent)."""
    found: list[FieldViolation] = []
    add = found.append
    name = draft.name
    if not name or not name.strip():
        add(violation("Name", "is required"))
    elif len(name) > MAX_NAME:
        add(violation("Name", f"is longer than {MAX_NAME} characters"))
    elif any(unicodedata.category(c) == "Cc" for c in name):
        add(violation("Name", "must not contain control characters"))
    elif has_bidi_control(name):
        add(violation("Name", BIDI_RULE))
    elif name in taken_names:
        add(violation("Name", f"another provider instance is already named {name!r}"))

    info = plugins.provider_type(draft.type_name)
    if not draft.type_name:
        add(violation("ProviderType", "is required"))
    elif draft.type_name in IMPLICIT_TYPES:
        add(violation("ProviderType", f"{draft.type_name} values go in SecretValue; no instance is needed"))
    elif info is None:
        known = ", ".join(sorted(set(plugins.provider_types) - IMPLICIT_TYPES)) or "none"
        add(violation(
            "ProviderType",
            f"no provider type {draft.type_name!r} is installed (installed: {known}):"
            f" {plugins.missing_type_hint(draft.type_name)}",
        ))
    if info is None:
        raise InvalidArgument(found or [violation("ProviderType", "is unknown")])

    init_params = tuple(p for p in info.cls.parameters if not p.instance_level)
    names = canonical_names(init_params)
    values: dict[str, str | Secret] = dict(keep or {})
    refused: set[str] = set()  # named already: "is required" would contradict what they were told
    for key, value in draft.initialization.items():
        parameter = names.get(key)
        where = f"Initialization.{key}"
        if parameter is None:
            expected = ", ".join(p.name for p in init_params) or "none"
            add(violation(where, f"is not an initialization parameter of {info.name} (expected: {expected})"))
        elif len(value) > MAX_INIT_VALUE or "\x00" in value:
            add(violation(where, f"must be under {MAX_INIT_VALUE} characters, without NUL"))
            refused.add(parameter.name)
        elif value == "":
            values.pop(parameter.name, None)
        else:
            try:
                parameter.parse(value)
            except BadParameters as error:
                add(violation(where, problem_of(error)))
                refused.add(parameter.name)
                continue
            values[parameter.name] = Secret(value) if parameter.kind == "secret" else value
    for parameter in init_params:
        if parameter.required and parameter.name not in values and parameter.name not in refused:
            add(violation(f"Initialization.{parameter.name}", f"is required by provider type {info.name}"))
    if found:
        raise InvalidArgument(found)
    # Stored values were read by their kinds when written; a plugin upgrade may have changed one.
    typed = typed_initialization(info.cls, values)
    try:
        info.cls.check_initialization(typed)
    except BadParameters as error:
        field_name = f"Initialization.{error.parameter}" if error.parameter else "Initialization"
        raise InvalidArgument([violation(field_name, str(error))]) from None
    return ProviderInstance(provider_id, name, info.name, values, source)


def typed_initialization(cls: type[SecretProvider], values: Mapping[str, str | Secret]) -> dict[str, ParameterValue]:
    """The typed initialization values `resolve` receives (`smtpconfig.plugin.values_for`), or
    InvalidArgument naming the stored value its parameter's kind no longer takes."""
    try:
        return values_for(cls.parameters, values, instance_level=False)
    except BadParameters as error:
        raise InvalidArgument([violation(f"Initialization.{error.parameter}", problem_of(error))]) from None


def encode_instance(instance: ProviderInstance, sealer: Sealer) -> bytes:
    init = {}
    for name, value in instance.initialization.items():
        if isinstance(value, Secret):
            init[name] = {"sealed": sealer.seal(value, f"{provider_key(instance.id)}#{name}")}
        else:
            init[name] = {"value": value}
    doc = {"schema": 1, "id": instance.id, "name": instance.name, "type": instance.type_name, "initialization": init}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_instance(data: bytes, sealer: Sealer, etag: str) -> ProviderInstance:
    doc = json.loads(data)
    init: dict[str, str | Secret] = {}
    for name, item in doc["initialization"].items():
        if "sealed" in item:
            init[name] = sealer.open(item["sealed"], f"{provider_key(doc['id'])}#{name}")
        else:
            init[name] = item["value"]
    return ProviderInstance(doc["id"], doc["name"], doc["type"], init, API, etag)


_V = TypeVar("_V")


def with_defaults(parameters: tuple[Parameter, ...], given: Mapping[str, _V]) -> dict[str, _V | str]:
    """`given` plus the defaults of optional parameters not given."""
    values: dict[str, _V | str] = dict(given)
    for parameter in parameters:
        if parameter.name not in values and parameter.default is not None:
            values[parameter.name] = parameter.default
    return values
