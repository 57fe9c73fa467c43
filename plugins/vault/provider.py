"""`VaultProvider`: reads one key of a KV v1 or v2 secret from HashiCorp Vault or OpenBao.

`resolve` is ``async def``: once a provider holds a token that needs no login, a read goes out on
the event loop (`fastread`), with no hop to a worker thread and without hvac's per-request cost;
the first read, logins, and every answer but a plain 200 go through hvac on the provider's own
worker threads, as before, so what callers are told is hvac's path's.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
        self._pool: ThreadPoolExecutor | None = None
        # The last initialization mapping parsed, and its settings: the service passes the same
        # mapping for every call of an instance revision.
        self._parsed: tuple[Mapping[str, Any], Settings] | None = None

    def __repr__(self) -> str:
        c = self._connection
        where = f"{c.settings.host!r}, auth={c.settings.auth_method!r}" if c else "not connected"
        return f"VaultProvider({where}, timeout={self.timeout:g})"

    @property
    def logins(self) -> int:
        """Logins made by the current client (AppRole and JWT)."""
        return self._connection.logins if self._connection else 0

    @property
    def loop_reads(self) -> int:
        """Reads the current client's connection answered on the event loop (`fastread`)."""
        return self._connection.reader.reads if self._connection else 0

    @classmethod
    def check_initialization(cls, initialization: Mapping[str, Any]) -> None:
        parse_settings(initialization)  # the rules across parameters: an auth method's credentials, ...

    # The plugin API takes an ``async def resolve`` too (SecretProvider's docstring); its stub is plain.
    async def resolve(  # type: ignore[override]
        self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]
    ) -> Resolved:
        parsed = self._parsed
        if parsed is not None and parsed[0] is initialization:
            settings = parsed[1]
        else:
            settings = parse_settings(initialization)
            self._parsed = (initialization, settings)
        reference = parse_reference(instance_parameters, settings)
        connection = self._connection
        same = connection is not None and (connection.settings is settings or connection.settings == settings)
        token = connection.ready_token() if connection is not None and same else None
        if connection is not None and token is not None:
            try:
                answer = await connection.reader.get(_api_path(settings, reference), token, self._run)
            except TimeoutError:
                _, errors = _hvac_modules()
                raise errors.no_answer(what=_describe(settings, reference), host=settings.host,
                                       timeout=self.timeout, secrets=connection.credentials()) from None
            if answer is not None:
                return self._resolved(answer, settings, reference, _describe(settings, reference))
        # In the caller's context, so lines logged on the thread carry the call's request id.
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self._executor(), run, self._resolve_blocking, settings, reference
        )

    async def _run(self, function: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), function)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="vault")
            return self._pool

    def _resolve_blocking(self, settings: Settings, reference: Reference) -> Resolved:
        """The read through hvac, logging in first when due (a worker thread)."""
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
            pool, self._pool = self._pool, None
        if connection is not None:
            connection.close()
        if pool is not None:
            pool.shutdown(wait=False)

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


def _api_path(settings: Settings, reference: Reference) -> str:
    """The path `_read` asks hvac for, spelt as hvac sends it."""
    mount, path = quote(settings.mount.encode()), quote(reference.path.encode())
    if settings.kv_version == 2:
        url = f"/v1/{mount}/data/{path}" + (f"?version={reference.version}" if reference.version is not None else "")
    else:
        url = f"/v1/{mount}/{path}"
    while "//" in url:
        url = url.replace("//", "/")
    return url


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
