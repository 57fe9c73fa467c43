"""OAuth 2.0 client credentials (RFC 6749 §4.4) for SMTP XOAUTH2, through Authlib's httpx client.

Client authentication defaults to ``client_secret_post`` (id and secret in the form body): Microsoft
Entra ID, Google and Keycloak all accept it for this grant. Every `RequestHeaders` entry is sent on
the token request, `Scope` as ``scope`` and `Audience` as ``audience``.

Tokens are cached per (endpoint, client, scope, audience, headers) until `REFRESH_MARGIN` before
they expire; concurrent callers share one fetch; `invalidate` drops a token the SMTP server refused
(a 535 on XOAUTH2), so the next call fetches a fresh one.

The endpoint is read by httpx's own parser (`smtpconfig.core.endpoint`, as validation reads it), its host is
checked by `smtpconfig.core.netguard`, and the request is dialled only at the checked addresses, the name
kept for the Host header, TLS SNI and the certificate check. Redirects are not followed.

Each fetch is counted and timed in the metrics (cached tokens are not fetches), and each token
fetched is handed to the log redactor.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from smtpconfig.core import endpoint
from smtpconfig.core.endpoint import DEFAULT_PORTS
from smtpconfig.core.errors import FailedPrecondition, Unavailable
from smtpconfig.core.netguard import Destination, check_destination
from smtpconfig.core.scrub import Scrubber, cap
from smtpconfig.core.secret import Secret
from smtpconfig.domain.model import RequestHeader
from smtpconfig.ops.logs import remember_secret
from smtpconfig.ops.metrics import NO_METRICS, AnyMetrics

if TYPE_CHECKING:  # imported on first use at run time (see `_http`)
    from authlib.integrations.base_client.errors import OAuthError as _AuthlibOAuthError

# Refresh this long before expiry, so a token is never used in its last moments.
REFRESH_MARGIN = 60.0
# Tokens with no expires_in are reused for this long.
DEFAULT_LIFETIME = 300.0
# A token response is a few KiB at most; more is a misconfigured or hostile endpoint.
MAX_RESPONSE_BYTES = 64 * 1024
# OAuth error codes and token types are short words (invalid_client, Bearer); an error
# description gets the usual 300 characters.
MAX_ERROR_CODE = 64


class _ResponseTooLarge(Exception):
    pass


class _Http(NamedTuple):
    httpx: ModuleType
    OAuthError: type[_AuthlibOAuthError]
    AsyncOAuth2Client: type
    PinnedTransport: type


@functools.cache
def _http() -> _Http:
    """httpx, Authlib's error and client, and an httpx transport that reads at most MAX_RESPONSE_BYTES."""
    # Imported on the first token fetch, not at start: httpx and Authlib add ~4 MiB RSS (footprint).
    import httpx
    from authlib.integrations.base_client.errors import OAuthError

    with warnings.catch_warnings():
        # Authlib 1.9 announces a move to "httpx2" on import; httpx is what it runs on today.
        warnings.filterwarnings("ignore", message="The httpx module is deprecated")
        from authlib.integrations.httpx_client import AsyncOAuth2Client

    class BoundedStream(httpx.AsyncByteStream):
        def __init__(self, stream: httpx.AsyncByteStream) -> None:
            self._stream = stream

        async def __aiter__(self):
            seen = 0
            async for chunk in self._stream:
                seen += len(chunk)
                if seen > MAX_RESPONSE_BYTES:
                    raise _ResponseTooLarge()
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    class PinnedTransport(httpx.AsyncHTTPTransport):
        """Sends to the checked addresses only, in order, keeping the URL's host for the Host
        header, TLS SNI and the certificate check; reads at most MAX_RESPONSE_BYTES."""

        def __init__(self, destination: Destination, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._destination = destination

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            # The Host header was set from the URL when the request was built; only the dial changes.
            request.extensions = {**request.extensions, "sni_hostname": self._destination.host}
            failure: httpx.ConnectError | None = None
            for address in self._destination.addresses:
                request.url = request.url.copy_with(host=str(address))
                try:
                    response = await super().handle_async_request(request)
                except httpx.ConnectError as error:  # nothing was sent: the next address may answer
                    failure = error
                    continue
                # An async transport's response stream is the async kind httpx types as either.
                response.stream = BoundedStream(response.stream)  # type: ignore[arg-type]
                return response
            assert failure is not None
            raise failure

    return _Http(httpx, OAuthError, AsyncOAuth2Client, PinnedTransport)


DEFAULT_AUTH_METHOD = "client_secret_post"


@dataclass(frozen=True)
class TokenRequest:
    """What identifies a token: where it comes from, for whom, for what."""

    endpoint: str
    client_id: Secret
    client_secret: Secret
    scope: str = ""
    audience: str = ""
    headers: tuple[RequestHeader, ...] = ()

    def cache_key(self) -> str:
        """A digest of everything that makes a token differ (secrets included, but only hashed)."""
        parts = [self.endpoint, self.client_id.reveal(), self.client_secret.reveal(), self.scope, self.audience]
        parts += [f"{h.name.lower()}:{h.value}" for h in self.headers]
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops being usable."""

    value: Secret
    token_type: str
    expires_at: datetime  # UTC
    fetched: bool  # True when this call fetched it, False when it came from the cache

    def expires_in(self, now: datetime | None = None) -> float:
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds()


class TokenError(FailedPrecondition):
    """The identity provider refused: `error` is its OAuth error code (invalid_client, ...)."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        super().__init__(f"the identity provider answered {error}" + (f": {description}" if description else ""))


class TokenClient:
    """Fetches and caches client-credentials tokens."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        context: ssl.SSLContext | None = None,
        auth_method: str = DEFAULT_AUTH_METHOD,
        metrics: AnyMetrics = NO_METRICS,
    ) -> None:
        self._timeout = timeout
        self._metrics = metrics
        # httpx takes an SSL context (a CA path is deprecated); True verifies with the system CAs.
        self._verify: ssl.SSLContext | bool = context or True
        self._auth_method = auth_method
        self._tokens: dict[str, tuple[float, AccessToken]] = {}
        self._inflight: dict[str, asyncio.Task[AccessToken]] = {}

    async def token(self, request: TokenRequest, *, refresh: bool = False) -> AccessToken:
        """A token for `request`, from the cache unless `refresh`: then a new one is fetched
        (callers that come while that fetch runs share it)."""
        key = request.cache_key()
        if refresh:
            self._tokens.pop(key, None)
            self._inflight.pop(key, None)  # it may carry a token fetched before the caller's reason
        cached = self._tokens.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return AccessToken(cached[1].value, cached[1].token_type, cached[1].expires_at, fetched=False)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(request), name="oauth-token")
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._fetched, key))
        token = await asyncio.shield(task)
        return token

    def _fetched(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:  # not one a refresh detached, nor the refresh's own after it
            del self._inflight[key]
        if not task.cancelled():
            # Every caller may have left (its deadline passed) before the fetch failed: read the
            # failure here, or asyncio logs "Task exception was never retrieved" at ERROR.
            task.exception()

    def invalidate(self, request: TokenRequest, token: Secret) -> None:
        """Forget `token` (the SMTP server refused it); the next `token` call fetches anew."""
        key = request.cache_key()
        cached = self._tokens.get(key)
        if cached is not None and cached[1].value == token:
            del self._tokens[key]

    async def _fetch(self, request: TokenRequest) -> AccessToken:
        """One fetch, measured from the destination check to the parsed answer."""
        http = _http()  # outside the measured time: the first fetch imports httpx and Authlib
        started = time.monotonic()
        try:
            token = await self._request(request, http)
        except Exception:
            self._metrics.token_fetch(False, time.monotonic() - started)
            raise
        self._metrics.token_fetch(True, time.monotonic() - started)
        return token

    async def _request(self, request: TokenRequest, http: _Http) -> AccessToken:
        httpx, OAuthError, AsyncOAuth2Client, PinnedTransport = http
        destination = await self._destination(request.endpoint)
        params: dict[str, str] = {}
        if request.scope:
            params["scope"] = request.scope
        if request.audience:
            params["audience"] = request.audience
        # What the IdP says back may echo the client credentials as they were sent (form-encoded,
        # or HTTP Basic's base64) and carry line breaks.
        scrub = Scrubber().client_credentials(request.client_id, request.client_secret).clean
        started = time.monotonic()
        try:
            async with AsyncOAuth2Client(
                client_id=request.client_id.reveal(),
                client_secret=request.client_secret.reveal(),
                token_endpoint_auth_method=self._auth_method,
                timeout=self._timeout,
                verify=self._verify,
                trust_env=False,
                follow_redirects=False,
                transport=PinnedTransport(destination, verify=self._verify),
                # On the client, so they are merged with Authlib's own (passing them to
                # fetch_token would replace those).
                headers={h.name: h.value for h in request.headers},
            ) as client:
                answer = await client.fetch_token(request.endpoint, grant_type="client_credentials", **params)
        except OAuthError as error:
            code = cap(scrub(str(error.error or "error")), MAX_ERROR_CODE)
            raise TokenError(code, _plain(error.description, scrub)) from None
        except _ResponseTooLarge:
            raise Unavailable(f"the token endpoint's answer is larger than {MAX_RESPONSE_BYTES} bytes") from None
        except httpx.TimeoutException:
            raise Unavailable(f"the token endpoint did not answer within {self._timeout:g}s") from None
        except httpx.HTTPStatusError as error:
            raise Unavailable(f"the token endpoint answered HTTP {error.response.status_code}") from None
        except httpx.HTTPError as error:
            raise Unavailable(f"the token endpoint cannot be reached ({type(error).__name__})") from None
        except ValueError:
            raise Unavailable("the token endpoint's answer is not an OAuth token response") from None
        value = answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise Unavailable("the token endpoint's answer has no access_token")
        lifetime = _lifetime(answer.get("expires_in"))
        expires_at = datetime.now(UTC) + timedelta(seconds=lifetime)
        remember_secret(value)
        # token_type goes back to ResolveSmtp's caller, who must never see the client secret.
        token_type = cap(scrub(str(answer.get("token_type") or "Bearer")), MAX_ERROR_CODE)
        token = AccessToken(Secret(value), token_type, expires_at, fetched=True)
        # Reused until shortly before expiry: a minute early, or halfway for short-lived tokens.
        self._tokens[request.cache_key()] = (started + lifetime - min(REFRESH_MARGIN, lifetime / 2), token)
        return token

    async def _destination(self, url: str) -> Destination:
        """The token endpoint's checked addresses, from the URL as httpx reads it."""
        try:
            parts = endpoint.parse(url)
        except endpoint.BadEndpoint:
            parts = None
        port = parts.port if parts is not None else None
        if parts is None or parts.scheme not in DEFAULT_PORTS or not parts.host or port is None or not 0 < port < 65536:
            # Stored before the current rules, or not through validation: refuse, do not crash.
            raise FailedPrecondition("TokenEndpoint is not an http(s) URL the token client can use")
        return await check_destination(parts.host, port, what="token endpoint", timeout=self._timeout)


def _lifetime(expires_in: object) -> float:
    try:
        seconds = float(expires_in)  # type: ignore[arg-type]  # any JSON value; what float() refuses is caught
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME
    return seconds if seconds > 0 else DEFAULT_LIFETIME


def _plain(text: object, scrub: Callable[[object], str]) -> str:
    """An IdP's error_description, scrubbed (one bounded line, no credential), or "" if none."""
    if not isinstance(text, str):
        return ""
    return scrub(text)
