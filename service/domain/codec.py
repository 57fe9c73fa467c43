"""The stored form of a profile: JSON with every inline secret sealed (see `smtpconfig.domain.crypto`).

The layout is our own, versioned by `"schema"`, and independent of the API messages so that both
API versions (and later ones) adapt onto one stored document.
"""

from __future__ import annotations

import json

from smtpconfig.domain.crypto import Sealer
from smtpconfig.domain.model import (
    CREDENTIAL_FIELDS,
    FIELDS,
    AuthType,
    InlineSecret,
    Profile,
    ProviderRef,
    RequestHeader,
    SecretSource,
)

SCHEMA = 1


def _context(record: str, name: str) -> str:
    return f"{record}#{FIELDS[name]}"


def encode_profile(profile: Profile, sealer: Sealer, record: str) -> bytes:
    doc: dict = {
        "schema": SCHEMA,
        "host": profile.host,
        "port": profile.port,
        "relay_authentication_type": int(profile.relay_authentication_type),
        "sender_account": profile.sender_account,
        "sender_name": profile.sender_name,
        "use_ssl": profile.use_ssl,
        "token_endpoint": profile.token_endpoint,
        "scope": profile.scope,
        "audience": profile.audience,
        "request_headers": [[h.name, h.value] for h in profile.request_headers],
    }
    for name, source in profile.secret_fields().items():
        if isinstance(source, InlineSecret):
            doc[name] = {"sealed": sealer.seal(source.value, _context(record, name))}
        else:
            doc[name] = {"provider": source.provider, "parameters": dict(source.parameters)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_profile(data: bytes, sealer: Sealer, record: str) -> Profile:
    doc = json.loads(data)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"stored profile has schema {doc.get('schema')!r}; this server reads {SCHEMA}")
    secrets: dict[str, SecretSource] = {}
    for name in CREDENTIAL_FIELDS:
        item = doc.get(name)
        if item is None:
            continue
        if "sealed" in item:
            secrets[name] = InlineSecret(sealer.open(item["sealed"], _context(record, name)))
        else:
            secrets[name] = ProviderRef(item["provider"], item["parameters"])
    return Profile(
        host=doc["host"],
        port=doc["port"],
        relay_authentication_type=AuthType(doc["relay_authentication_type"]),
        sender_account=doc["sender_account"],
        sender_name=doc["sender_name"],
        use_ssl=doc["use_ssl"],
        token_endpoint=doc["token_endpoint"],
        scope=doc["scope"],
        audience=doc["audience"],
        request_headers=tuple(RequestHeader(n, v) for n, v in doc["request_headers"]),
        **secrets,
    )
