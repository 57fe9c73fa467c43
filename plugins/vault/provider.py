"""`VaultProvider`: reads one key of a KV v1 or v2 secret from HashiCorp Vault or OpenBao."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from smtpconfig.plugin import (
    AccessDenied,
    ProviderError,
    Resolved,
    Secret,
    SecretNotFound,
    SecretProvider,
)

from .parameters import PARAMETERS, Reference, Settings, parse_reference, parse_settings

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)


def _hvac_modules() -> tuple[ModuleType, ModuleType]:
    """This package's `connection` and `errors` modules, the ones that import hvac and requests."""
    # Imported on first connection, not at registration: hvac and requests add ~6 MiB RSS (footprint).
    from . import connection, errors

    return connection, errors


class VaultProvider(SecretProvider):
    """See the module docstrings of this package for the parameter forms, login and errors.

    A value that is not a string is turned into one: numbers and booleans with ``str()`` (so
    ``True`` gives ``"True"``), objects and lists as compact JSON. The cache belongs to the service:
    every `resolve` reads from Vault, and says how long its value may be cached: `TtlSeconds` (or
    `default_ttl`), except that a KV v1 ``lease_duration`` shorter than that (a ``ttl`` field in the
    secret) wins.
    """

    name = "vault"
    display_name = "HashiCorp Vault / OpenBao"
    description = (
        "Reads a key of a KV v1 or v2 secret from HashiCorp Vault or OpenBao, with token, AppRole or JWT "
        "(e.g. Kubernetes service-account) login, namespaces and a custom CA bundle. Accepts Keyfactor's "
        "Hashicorp-Vault PAM parameter names."
    )
    parameters = PARAMETERS

    def __init__(self, *, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout)
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def __repr__(self) -> str:
        c = self._connection
        where = f"{c.settings.host!r}, auth={c.settings.auth_method!r}" if c else "not connected"
        return f"VaultProvider({where}, timeout={self.timeout:g})"

    @property
    def logins(self) -> int:
        """Logins made by the current client (AppRole and JWT)."""
        return self._connection.logins if self._connection else 0

    @classmethod
    def check_initialization(cls, initialization: Mapping[str, Any]) -> None:
        parse_settings(initialization)  # the rules across parameters: an auth method's credentials, ...

    def resolve(self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]) -> Resolved:
        settings = parse_settings(initialization)
        reference = parse_reference(instance_parameters, settings)
        connection = self._connect(settings)
        what = _describe(settings, reference)
        login = f"the {settings.auth_method} login at auth/{settings.auth_mount}"
        client, generation = self._call(connection, True, login, connection.client)
        try:
            answer = self._call(connection, False, what, _read, client, settings, reference)
        except AccessDenied:
            if settings.auth_method == "token":
                raise
            # The token may have expired or been revoked early: one new login, one more read.
            log.info("vault: permission denied reading %s; logging in again once", what)
            client = self._call(connection, True, login, connection.relogin, generation)
            answer = self._call(connection, False, what, _read, client, settings, reference)
        return self._resolved(answer, settings, reference, what)

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self, settings: Settings) -> Connection:
        with self._lock:
            old = self._connection
            if old is not None and old.settings == settings:
                return old
            connection, _ = _hvac_modules()
            self._connection = connection.Connection(settings, self.timeout)
        if old is not None:
            old.close()  # the instance's initialization changed
        return self._connection

    def _call(self, connection: Connection, login: bool, what: str, function, *args: Any) -> Any:
        try:
            return function(*args)
        except ProviderError:
            raise
        except Exception as error:
            _, errors = _hvac_modules()
            # The credentials held now: a login may have returned a token since the call began.
            mapped = errors.translate(error, login=login, what=what, host=connection.settings.host,
                                      timeout=self.timeout, secrets=connection.credentials())
            if mapped is None:
                raise
            raise mapped from None

    def _resolved(self, answer: dict, settings: Settings, reference: Reference, what: str) -> Resolved:
        if settings.kv_version == 2:
            body = answer.get("data") or {}
            data, version = body.get("data"), (body.get("metadata") or {}).get("version")
            ttl, lease_id = settings.ttl, None
        else:
            data, version = answer.get("data"), None
            lease = answer.get("lease_duration") or 0
            cache = self.default_ttl if settings.ttl is None else settings.ttl
            ttl = float(lease) if 0 < lease < cache else settings.ttl
            lease_id = answer.get("lease_id") or None
        if not isinstance(data, dict):
            raise SecretNotFound(f"Vault has no data for {what} (deleted or destroyed)")
        if reference.key not in data or data[reference.key] is None:
            raise SecretNotFound(f"Vault has no key {reference.key!r} in {what}")
        log.debug("vault: read %s", what)
        return Resolved(Secret(_as_text(data[reference.key])), ttl=ttl, lease_id=lease_id,
                        version=None if version is None else str(version))


def _read(client: Any, settings: Settings, reference: Reference) -> dict:
    if settings.kv_version == 2:
        return client.secrets.kv.v2.read_secret_version(path=reference.path, mount_point=settings.mount,
                                                        version=reference.version, raise_on_deleted_version=True)
    return client.secrets.kv.v1.read_secret(path=reference.path, mount_point=settings.mount)


def _describe(settings: Settings, reference: Reference) -> str:
    where = f"secret {reference.path!r} in mount {settings.mount!r} (KV v{settings.kv_version}"
    if settings.namespace:
        where += f", namespace {settings.namespace!r}"
    if reference.version is not None:
        where += f", version {reference.version}"
    return where + ")"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)
