"""One hvac client per provider object, and the login that keeps its token valid.

Token auth uses the token as given. AppRole and JWT log in on first use and again when 3/4 of the
token's lifetime (the login's ``lease_duration``, counted from before the login was sent) has
passed, so a read never goes out with an expired token; `relogin` is the reactive fallback for a
403 on a token Vault stopped honouring early. Logins happen under a lock, so concurrent resolutions
share one; reads run outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import hvac

from smtpconfig.plugin import BadParameters

from . import fastread, transport
from .parameters import Settings

log = logging.getLogger(__name__)

#: Part of a token's lifetime after which a new login is due.
REFRESH_AFTER = 0.75
#: Connections kept per host: concurrent resolutions run on many worker threads.
POOL_SIZE = 32
# Credentials obtained at run time that are still masked (the newest ones).
_KEPT = 4


class Connection:
    """The client for one `Settings`. Call `client` before each read; errors are hvac's and requests'."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._generation = 0  # counts logins; 0: not logged in (or token auth)
        self._refresh_at: float | None = None  # monotonic time a new login is due; None: never
        #: Successful logins so far, for logs and tests.
        self.logins = 0
        # Credentials obtained at run time (the JWT read from JwtFile, tokens logins returned),
        # newest last: Vault may echo any of them in an error, and only this provider knows them.
        self._obtained: tuple[str, ...] = ()
        #: Reads on the event loop with the token `ready_token` gives (`fastread`).
        self.reader = fastread.Reader(settings, timeout)

    def client(self) -> tuple[hvac.Client, int]:
        """The client, logged in with a token that is not due for refresh, and its login generation."""
        with self._lock:
            client = self._ensure_client()
            if self.settings.auth_method != "token" and (
                self._generation == 0 or (self._refresh_at is not None and time.monotonic() >= self._refresh_at)
            ):
                self._login(client)
            return client, self._generation

    def ready_token(self) -> str | None:
        """The token a read may carry now without a login, or None: no client yet, a login due, or
        another thread busy with the client (a login under way). Never waits."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            client = self._client
            if client is None:
                return None
            if self.settings.auth_method != "token" and (
                self._generation == 0 or (self._refresh_at is not None and time.monotonic() >= self._refresh_at)
            ):
                return None
            return client.token or None
        finally:
            self._lock.release()

    def credentials(self) -> tuple[str, ...]:
        """Every credential in play: the inline ones, and those obtained at run time."""
        return self.settings.secrets() + self._obtained

    def _obtain(self, credential: str) -> None:
        # A few: the token before the last login may still be echoed by a read in flight.
        if credential and credential not in self._obtained:
            self._obtained = (*self._obtained, credential)[-_KEPT:]

    def relogin(self, generation: int) -> hvac.Client:
        """Log in again unless another thread did since `generation` was handed out."""
        with self._lock:
            client = self._ensure_client()
            if self._generation == generation:
                self._login(client)
            return client

    def close(self) -> None:
        with self._lock:
            client, self._client, self._generation = self._client, None, 0
        self.reader.close()
        if client is not None:
            client.adapter.close()

    def _ensure_client(self) -> hvac.Client:
        if self._client is None:
            s = self.settings
            if s.ca_bundle is not None and not Path(s.ca_bundle).is_file():
                raise BadParameters(f"CaBundle {s.ca_bundle!r} is not a readable file", "CaBundle")
            session = transport.session(s.ca_bundle or True, POOL_SIZE)
            token = s.token.reveal() if s.auth_method == "token" and s.token is not None else ""
            # token "" (not None): hvac would otherwise fall back to VAULT_TOKEN or ~/.vault-token.
            # types-hvac says int; hvac hands the timeout to requests, which takes seconds as a float.
            self._client = hvac.Client(url=s.host, token=token, verify=s.ca_bundle or True,
                                       timeout=self._timeout,  # type: ignore[arg-type]
                                       namespace=s.namespace, session=session)
        return self._client

    def _jwt(self) -> str:
        s = self.settings
        if s.jwt is not None:
            return s.jwt.reveal()
        assert s.jwt_file is not None
        try:
            text = Path(s.jwt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise BadParameters(f"JwtFile {s.jwt_file!r} cannot be read: {type(error).__name__}", "JwtFile") from None
        if not text:
            raise BadParameters(f"JwtFile {s.jwt_file!r} is empty", "JwtFile")
        self._obtain(text)
        return text

    def _login(self, client: hvac.Client) -> None:
        s = self.settings
        started = time.monotonic()
        if s.auth_method == "approle":
            assert s.secret_id is not None
            answer = client.auth.approle.login(role_id=s.role_id, secret_id=s.secret_id.reveal(),
                                               mount_point=s.auth_mount, use_token=True)
        else:
            answer = client.auth.jwt.jwt_login(role=s.role, jwt=self._jwt(), path=s.auth_mount, use_token=True)
        self._obtain(str(answer["auth"].get("client_token") or ""))
        lease = float(answer["auth"].get("lease_duration") or 0)
        self._refresh_at = started + lease * REFRESH_AFTER if lease > 0 else None
        self._generation += 1
        self.logins += 1
        log.info("vault: logged in to %s with %s at auth/%s%s; token valid for %gs", s.host, s.auth_method,
                 s.auth_mount, f" in namespace {s.namespace}" if s.namespace else "", lease)
