"""Secret initialization values are bound to where they go.

A provider instance's secret values (a Vault token, an AppRole secret_id, an exec Token) were given
for one destination. An update that changes a parameter that binds them (`Parameter.binds_secrets`:
a Host, an auth method, a command) must send them again, or clear them with ``""``; otherwise a
caller who may change Host but never read the token could aim the stored token at a host they run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from smtpconfig.core.errors import FieldViolation, violation
from smtpconfig.core.secret import Secret
from smtpconfig.domain.providers import with_defaults
from smtpconfig.plugin import Parameter


def unbound_secrets(
    parameters: tuple[Parameter, ...],
    stored: Mapping[str, str | Secret],
    updated: Mapping[str, str | Secret],
    sent: Iterable[str],
) -> list[FieldViolation]:
    """One violation per stored secret value the update would carry to a changed destination.
    `sent` holds the canonical names of the initialization values the update states."""
    init = tuple(p for p in parameters if not p.instance_level)
    before, after = with_defaults(init, stored), with_defaults(init, updated)
    moved = [p.name for p in init if p.binds_secrets and before.get(p.name) != after.get(p.name)]
    if not moved:
        return []
    given = set(sent)
    because = ", ".join(moved)
    return [
        violation(f"Initialization.{p.name}",
                  f"must be sent again because {because} changed (or cleared with \"\"); the stored value is not kept")
        for p in init
        if p.data_type == "secret" and p.name in stored and p.name not in given
    ]
