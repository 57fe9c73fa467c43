"""A started server has not imported hvac, requests, Authlib, httpx or aiohttp: a sidecar that uses
neither Vault nor OAuth never pays for them (about 10 MiB of RSS together). They load when a Vault
instance first connects (aiohttp on its first read on the event loop) or a token is first fetched;
`test_vault_provider`, `test_vault_service`, `test_oauth_client` and `test_apply` exercise those paths.

Each check runs in a fresh interpreter, since this test process has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.kits.support import ROOT, short_dir

HEAVY = ("hvac", "requests", "authlib", "httpx", "aiohttp")

# Started the way `smtpconfig serve` starts it (settings from flags, then `App.start`), and then
# asked for the provider types' parameter schemas and to store a Vault instance over a real channel.
SERVE = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path

    import grpc

    from smtpconfig import settings as settings_mod
    from smtpconfig.app import App
    from smtpconfig.v2 import secret_provider_service_pb2 as pb
    from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc

    HEAVY = {heavy!r}

    def loaded():
        return sorted(name for name in HEAVY if name in sys.modules)

    async def main():
        settings = settings_mod.load(flags={{"data_dir": Path(sys.argv[1]), "listen": "127.0.0.1:0"}},
                                     config_file=None)
        app = App(settings)
        await app.start()
        try:
            seen = {{"after start": loaded()}}
            token = app.admin_token_path.read_text().strip()
            metadata = (("authorization", f"Bearer {{token}}"),)
            async with grpc.aio.insecure_channel(app.target) as channel:
                stub = pb_grpc.SecretProviderServiceStub(channel)
                types = await stub.ListProviderTypes(pb.ListProviderTypesRequest(), metadata=metadata)
                instance = pb.ProviderInstance(name="bao", provider_type="vault")
                instance.initialization["Host"].value = "http://127.0.0.1:1"
                instance.initialization["Token"].value = "s.unused"
                created = await stub.CreateProvider(pb.CreateProviderRequest(provider=instance), metadata=metadata)
            seen["after schema and create"] = loaded()
            vault = next(t for t in types.provider_types if t.name == "vault")
            seen["vault parameters"] = [p.name for p in vault.parameters]
            seen["created"] = created.provider.provider_type
        finally:
            await app.stop(0)
        print(json.dumps(seen))

    asyncio.run(main())
""").format(heavy=HEAVY)

# The classes that use them import and instantiate without them.
INSTANTIATE = textwrap.dedent("""
    import json, sys

    from smtpconfig.providers.vault import VaultProvider
    from smtpconfig.outbound.oauth import TokenClient

    HEAVY = {heavy!r}

    provider = VaultProvider(timeout=3)
    client = TokenClient(timeout=3)
    print(json.dumps({{
        "loaded": sorted(name for name in HEAVY if name in sys.modules),
        "provider": repr(provider),
        "parameters": [p.name for p in provider.parameters],
        "client": type(client).__name__,
    }}))
""").format(heavy=HEAVY)


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_started_server_has_not_imported_the_vault_or_oauth_clients() -> None:
    seen = run(SERVE, str(short_dir("fp")))
    assert seen["after start"] == []
    assert seen["after schema and create"] == []
    assert {"Host", "Token", "AuthMethod", "Secret", "Key"} <= set(seen["vault parameters"])
    assert seen["created"] == "vault"


def test_the_vault_provider_and_token_client_instantiate_without_them() -> None:
    seen = run(INSTANTIATE)
    assert seen["loaded"] == []
    assert seen["provider"] == "VaultProvider(not connected, timeout=3)"
    assert {"Host", "Token", "Secret", "Key"} <= set(seen["parameters"])
    assert seen["client"] == "TokenClient"
