"""The first-party Vault provider (type ``vault``): HashiCorp Vault and OpenBao KV secrets.

Written against the public plugin API only (`smtpconfig.plugin`); hvac is used in this package and
nowhere else. Modules: `parameters` (names, spellings, checks), `connection` (client and login),
`errors` (Vault's answers as provider errors), `fastread` (reads on the event loop through aiohttp
once a token is held, dialling checked addresses only), `provider` (`VaultProvider.resolve`).
"""

from __future__ import annotations

from smtpconfig.plugin import Register, hookimpl

from .provider import VaultProvider

__all__ = ["VaultProvider", "register_secret_providers"]


@hookimpl
def register_secret_providers(register: Register) -> None:
    register(VaultProvider)
