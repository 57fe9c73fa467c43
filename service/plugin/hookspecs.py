"""The hooks a smtpconfig plugin can implement. Each is documented in docs/plugins.md; a test
fails when one is not.

Every hook follows one template: when it is called, its parameters, what it returns, whether
the first result stops the call, and since which version it exists.
"""

from __future__ import annotations

import pluggy

from smtpconfig.plugin import PROJECT, Register

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def register_secret_providers(register: Register) -> None:
    """Add secret provider types.

    Called: once when the server (or ``smtpconfig plugins --local``) starts, for each plugin on
    its own, so a failing plugin is reported and skipped without affecting the others. A
    misspelt hook fails its plugin, naming the hook it probably meant.

    Args:
        register: call ``register(ProviderClass)`` once per `smtpconfig.plugin.SecretProvider`
            subclass. The host checks the class (name, parameters, `resolve`) and refuses a type
            name that another plugin already registered.

    Returns:
        Nothing; results are ignored, every plugin is called.

    Since: 0.1.
    """
