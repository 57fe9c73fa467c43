"""Who is calling, and what they may do.

A caller is known by one of three things, checked in this order:

1. a bearer token in the `authorization` metadata (`Bearer <token>`). Only SHA-256 hashes of
   tokens are configured; a presented token is hashed and its hash looked up among them, so a
   call costs the same however many tokens are configured. The lookup's timing can tell only of
   the hash, which nobody can steer towards a configured one without the token itself. A token
   that matches nothing is refused, never ignored;
2. on a TCP listener with mTLS, the client certificate the TLS handshake verified: its URI SANs
   (a SPIFFE ID, say) verbatim, its DNS SANs as `dns:NAME`, its subject CN as `cn:NAME`. The first
   of these the policy names is the caller's identity;
3. on the Unix socket, the configured `unix_socket_identity`: the socket file's owner, group and
   mode decide who can connect at all, so whoever can connect is that identity.

The policy maps identities to permissions and denies everything it does not grant.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtpconfig.core.bidi import RULE as BIDI_RULE
from smtpconfig.core.bidi import has_bidi_control
from smtpconfig.core.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from smtpconfig.core.permissions import ALL_PERMISSIONS, PERMISSIONS, is_uri_identity

ADMIN = "admin"
ADMIN_TOKEN_NAME = "admin.token"
TOKEN_PREFIX = "sct_"
_BEARER = "bearer "


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe, recognisable by its prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the settings hold for a token: the hex SHA-256 of its UTF-8 bytes. Tokens are random
    256-bit strings, so a fast hash is enough; there is nothing to guess."""
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(data_dir: Path) -> str:
    """The embedded default's admin token from `<data_dir>/admin.token`, created (mode 0600)
    when missing. Refuses a token file that others than its owner can read."""
    path = data_dir / ADMIN_TOKEN_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise FailedPrecondition(
                f"{path} can be read by others (mode {mode & 0o777:04o}); chmod 600 it or delete it"
                " to have a new one made"
            ) from None
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise FailedPrecondition(f"{path} is empty; delete it to have a new one made") from None
        return token
    token = new_token()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller as the policy names it."""

    name: str


class Policy:
    """Identity -> permissions. `*` grants every permission. Everything else is denied."""

    def __init__(self, entries: Iterable[tuple[str, Sequence[str]]]) -> None:
        self._grants: dict[str, frozenset[str]] = {}
        for identity, permissions in entries:
            granted = set(permissions)
            if ALL_PERMISSIONS in granted:
                granted = set(PERMISSIONS)
            self._grants[identity] = frozenset(granted) | self._grants.get(identity, frozenset())

    def names(self, identity: str) -> bool:
        return identity in self._grants

    def allows(self, identity: str, permission: str) -> bool:
        granted = self._grants.get(identity)
        return granted is not None and permission in granted

    def check(self, identity: Identity, permission: str) -> None:
        if not self.allows(identity.name, permission):
            raise PermissionDenied(f"{identity.name!r} does not have the {permission} permission")


class Authenticator:
    """Finds the identity of a call (see the module docstring for the order)."""

    def __init__(self, tokens: Iterable[tuple[str, str]], policy: Policy, unix_identity: str = "") -> None:
        # Settings refuse two tokens with one hash, so each hash names one identity.
        self._tokens = {bytes.fromhex(digest): Identity(identity) for identity, digest in tokens}
        self._policy = policy
        self._unix = Identity(unix_identity) if unix_identity else None

    def identify(self, context, metadata: Iterable[tuple[str, str | bytes]]) -> Identity:
        """The caller of the call behind `context`, whose invocation metadata is `metadata`.
        Raises `Unauthenticated` when it has none or brings a bad one."""
        for key, value in metadata:
            if key == "authorization":
                if not isinstance(value, str):  # only keys ending in -bin carry bytes: fail closed
                    raise Unauthenticated("the authorization metadata is not text")
                return self._from_token(value)
        peer = context.peer()
        if peer.startswith("unix:"):
            if self._unix is None:
                raise Unauthenticated(
                    "Unix socket callers must bring a bearer token (no unix_socket_identity is set)"
                )
            return self._unix
        certificate = self._from_certificate(context.auth_context())
        if certificate is not None:
            return certificate
        raise Unauthenticated("no credentials: send `authorization: Bearer <token>` or a client certificate")

    def _from_token(self, value: str) -> Identity:
        if not value[: len(_BEARER)].lower() == _BEARER:
            raise Unauthenticated("the authorization metadata must be `Bearer <token>`")
        found = self._tokens.get(hashlib.sha256(value[len(_BEARER):].strip().encode()).digest())
        if found is None:
            raise Unauthenticated("the bearer token is not known to this server")
        return found

    def _from_certificate(self, auth: dict) -> Identity | None:
        if auth.get("transport_security_type") != [b"ssl"]:
            return None
        names = [u for u in (v.decode() for v in auth.get("peer_uri", ())) if is_uri_identity(u)]
        names += ["dns:" + v.decode() for v in auth.get("peer_dns", ())]
        names += ["cn:" + v.decode() for v in auth.get("x509_common_name", ())]
        if not names:  # TLS without a client certificate (server-side TLS only)
            return None
        # Such a name could pass for another in logs and audit records; the policy names none.
        names = [name for name in names if not has_bidi_control(name)]
        if not names:
            raise Unauthenticated(f"the client certificate's names {BIDI_RULE}")
        for name in names:
            if self._policy.names(name):
                return Identity(name)
        return Identity(names[0])
