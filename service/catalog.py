"""What validation needs to know about secret provider instances: their ids, types and parameters.

`service.providers.ProviderRegistry` is the catalog of a running server; `NoProviders` and
`StaticCatalog` serve tools and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from service.plugin import Parameter


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
        names: dict[str, str] = {}
        for p in self.instance_parameters:
            names.update({alias: p.name for alias in p.aliases} | {p.name: p.name})
        return names


class ProviderCatalog(Protocol):
    """Looks up provider instances by Id."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None: ...


class NoProviders:
    """A catalog with no provider instances."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None:
        return None


class StaticCatalog:
    """A fixed set of provider instances."""

    def __init__(self, instances: list[ProviderInstanceInfo] | tuple[ProviderInstanceInfo, ...] = ()) -> None:
        self._by_id = {i.id: i for i in instances}

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None:
        return self._by_id.get(provider_id)
