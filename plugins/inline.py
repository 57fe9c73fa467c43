"""The `inline` provider: a value held by smtpconfig itself (`{"SecretValue": "..."}`).

Inline values are decrypted in the service already; this provider only passes them through, so an
inline secret takes the same path through the resolution engine as any other (timing, reporting,
fingerprints). It is implicit: no provider instance of this type is ever created by a caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smtpconfig.plugin import Parameter, Resolved, Secret, SecretProvider, hookimpl

INLINE = "inline"


class InlineProvider(SecretProvider):
    """Returns the sealed-at-rest value it is given."""

    name = INLINE
    display_name = "Inline (stored by smtpconfig)"
    description = "A value stored in smtpconfig itself, encrypted at rest and never returned by reads."
    parameters = (
        Parameter("SecretValue", kind="secret", description="the value itself"),
    )
    # Nothing to refresh: the value changes only when the profile does.
    default_ttl = float("inf")

    def resolve(self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]) -> Resolved:
        value = initialization["SecretValue"]
        assert isinstance(value, Secret)
        return Resolved(value)


@hookimpl
def register_secret_providers(register) -> None:
    register(InlineProvider)
