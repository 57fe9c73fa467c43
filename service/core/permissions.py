"""What a caller may be granted, and what a caller's name may look like.

Every RPC needs one permission (health and reflection need none); the policy grants them to
identities, and denies whatever it does not grant. Each is a boundary that holds against a
hostile holder of it (SPEC.md §9; the README's trust model table says it in full):

- `smtp:read`: read the profile without any secret value: hosts, ports, sender, provider
  references and whether a secret has a value (`GetSmtp`).
- `smtp:modify`: replace or change the profile (`UpdateSmtp`), and so choose where its
  credentials go; a secret kept as `{"HasValue": true}` cannot follow a change of where it goes.
- `smtp:test`: send a test message (`TestSmtp`). Credentials the caller did not type (provider
  references, anything stored) go only to the stored profile's own destinations, unless the
  caller also holds `smtp:resolve`.
- `smtp:resolve`: receive working credentials (`ResolveSmtp`): username and password, or an
  OAuth access token, never the client secret.
- `smtp:watch`: follow the profile as `smtp:read` shows it, pushed on every change with its
  revision (`WatchSmtp`); never a secret value.
- `providers:read`: list provider types, plugins and instances, and check a secret reference
  (`CheckSecret`: success, latency, a keyed fingerprint), never reading a secret value.
- `providers:modify`: create, change and delete API-made provider instances and flush cached
  values; what an instance may reach on the host is still only what the operator's config lists.
- `audit:read`: read the audit trail (`ListAuditRecords`), whose records never hold a value.

`*` (`ALL_PERMISSIONS`) in a policy entry grants every one of them.

Identities come in two shapes that never overlap, so one cannot pass for the other:

- plain names (`is_plain_identity`), for bearer tokens and Unix socket callers: letters, digits
  and `. _ @ -`, starting with a letter or digit, at most 128 characters;
- certificate names (`is_certificate_identity`): a URI SAN verbatim (`is_uri_identity`, e.g. a
  SPIFFE ID), a DNS SAN as `dns:NAME`, the subject CN as `cn:NAME`.
"""

from __future__ import annotations

import re

PERMISSIONS = (
    "smtp:read", "smtp:modify", "smtp:test", "smtp:resolve", "smtp:watch",
    "providers:read", "providers:modify", "audit:read",
)
ALL_PERMISSIONS = "*"

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")
_URI = r"[a-z][a-z0-9+.-]*://"
_URI_NAME = re.compile(rf"^{_URI}\S+\Z")
_CERTIFICATE_NAME = re.compile(rf"^(dns:|cn:|{_URI})\S+\Z")


def is_plain_identity(name: str) -> bool:
    """Whether `name` may name a token's or the Unix socket's caller."""
    return _PLAIN.match(name) is not None


def is_uri_identity(name: str) -> bool:
    """Whether a certificate's URI SAN is a real URI (scheme://...), and so may be an identity: a
    URI SAN such as "admin" or "dns:x" must not pass for a plain, DNS or CN identity."""
    return _URI_NAME.match(name) is not None


def is_certificate_identity(name: str) -> bool:
    """Whether `name` has the shape of an identity taken from a client certificate."""
    return _CERTIFICATE_NAME.match(name) is not None
