"""What validation needs to know about secret provider instances: their ids, types and parameters.

`smtpconfig.domain.provider_service.ProviderService` is the catalog of a running server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from smtpconfig.plugin import BadParameters, Parameter, SecretProvider


def canonical_names(parameters: tuple[Parameter, ...] | list[Parameter]) -> dict[str, Parameter]:
    """Every accepted name of `parameters` (canonical and alias) to its parameter."""
    names: dict[str, Parameter] = {}
    for parameter in parameters:
        names.update({alias: parameter for alias in parameter.aliases} | {parameter.name: parameter})
    return names


def problem_of(error: BadParameters) -> str:
    """What `Parameter.parse` found, without the parameter's name in front (the field names it)."""
    text, name = str(error), error.parameter or ""
    return text[len(name) + 1:] if name and text.startswith(f"{name} ") else text


@dataclass(frozen=True)
class ProviderInstanceInfo:
    """A configured provider instance, as far as reference checking is concerned."""

    id: int
    name: str
    type_name: str
    parameters: tuple[Parameter, ...] = ()

    # Computed once per instance revision: validation reads these on every request.
    @cached_property
    def instance_parameters(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.instance_level)

    @cached_property
    def instance_names(self) -> dict[str, Parameter]:
        """Every accepted instance parameter name (canonical and alias) to its parameter."""
        return canonical_names(self.instance_parameters)


class ProviderCatalog(Protocol):
    """Looks up provider instances by Id."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None: ...



class ProviderTypeEntry(Protocol):
    """An installed provider type."""

    @property
    def cls(self) -> type[SecretProvider]: ...

    @property
    def name(self) -> str: ...


class ProviderTypes(Protocol):
    """The installed provider types (`smtpconfig.plugin.manager.Plugins` in a running server)."""

    @property
    def provider_types(self) -> Mapping[str, ProviderTypeEntry]: ...

    def provider_type(self, name: str) -> ProviderTypeEntry | None: ...

    def missing_type_hint(self, type_name: str) -> str:
        """Why `type_name` may be missing, for a message that names it."""
        ...
