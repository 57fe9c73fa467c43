"""What validation needs to know about secret provider instances: their ids, types and parameters.

`smtpconfig.domain.provider_service.ProviderService` is the catalog of a running server.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from smtpconfig.plugin import Parameter


def canonical_names(parameters: tuple[Parameter, ...] | list[Parameter]) -> dict[str, Parameter]:
    """Every accepted name of `parameters` (canonical and alias) to its parameter."""
    names: dict[str, Parameter] = {}
    for parameter in parameters:
        names.update({alias: parameter for alias in parameter.aliases} | {parameter.name: parameter})
    return names


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
    def instance_names(self) -> dict[str, str]:
        """Every accepted instance parameter name (canonical and alias) to the canonical one."""
        return {name: p.name for name, p in canonical_names(self.instance_parameters).items()}


class ProviderCatalog(Protocol):
    """Looks up provider instances by Id."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None: ...

