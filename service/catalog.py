"""What validation needs to know about secret provider instances.

The provider issue fills this with configured instances; until then `NoProviders` answers for an
installation with none, so every provider reference is reported as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a provider type (Keyfactor's PAM provider type parameter)."""

    name: str
    display_name: str = ""
    data_type: str = "string"  # "string" or "secret"
    instance_level: bool = True
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class ProviderInstanceInfo:
    """A configured provider instance, as far as reference checking is concerned."""

    id: int
    name: str
    type_name: str
    parameters: tuple[ParameterSpec, ...] = ()

    @property
    def instance_parameters(self) -> tuple[ParameterSpec, ...]:
        return tuple(p for p in self.parameters if p.instance_level)


class ProviderCatalog(Protocol):
    """Looks up provider instances by Id."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None: ...


class NoProviders:
    """A catalog with no provider instances."""

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None:
        return None


class StaticCatalog:
    """A fixed set of provider instances (declared in configuration, or built by tests)."""

    def __init__(self, instances: list[ProviderInstanceInfo] | tuple[ProviderInstanceInfo, ...] = ()) -> None:
        self._by_id = {i.id: i for i in instances}

    def instance(self, provider_id: int) -> ProviderInstanceInfo | None:
        return self._by_id.get(provider_id)
