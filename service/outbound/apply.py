"""Apply time: the profile turned into working credentials (ResolveSmtp) and tried against the
relay (TestSmtp). Both use the same resolution engine and token cache.

A TestSmtp crosses threads once each way: the loop resolves the credentials (cache hits never
suspend), hands the whole exchange, name lookup included, to a thread of the pool, and takes the
steps back before that thread's QUIT (`smtp_check`). smtplib on a thread was measured against
aiosmtplib on the event loop for the same pinned exchange (bench/README.md, TestSmtp): the
asyncio client took 0.3–0.45 ms more CPU per exchange and was never faster, so the exchange stays
blocking code on a thread, and `abandon` is how a caller that leaves stops it.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from smtpconfig.core.errors import FailedPrecondition, InvalidArgument, SmtpConfigError, violation
from smtpconfig.core.secret import Secret
from smtpconfig.domain.model import AuthType, InlineSecret, Profile, SecretSource
from smtpconfig.domain.resolver import Resolver
from smtpconfig.domain.validation import mailbox_problems
from smtpconfig.outbound import smtp_check
from smtpconfig.outbound.oauth import AccessToken, TokenClient, TokenRequest
from smtpconfig.outbound.smtp_check import FAILED, OK, SKIPPED, Exchange, Step

# Never tell a caller to cache credentials longer than this.
MAX_CACHE_FOR = 300.0


@dataclass(frozen=True)
class Credentials:
    """Concrete credentials of the effective profile."""

    username: Secret | None = None
    password: Secret | None = None
    token: AccessToken | None = None
    cache_for: float = MAX_CACHE_FOR


@dataclass(slots=True)
class _Kept:
    """Basic credentials as resolved for one stored profile: valid while the resolver's
    `generation` holds still and until the first of the two values expires (an inline value
    never does)."""

    profile: Profile
    generation: int
    until: float  # time.monotonic()
    username: Secret
    password: Secret


class Applier:
    """Resolves credentials and runs test exchanges with the relay."""

    def __init__(
        self,
        resolver: Resolver,
        tokens: TokenClient,
        *,
        smtp_timeout: float,
        context: ssl.SSLContext,
        allow_plaintext_auth: bool,
        implicit_tls_ports: tuple[int, ...] = (465,),
        workers: int = 16,
    ) -> None:
        self._implicit_tls_ports = implicit_tls_ports
        self._resolver = resolver
        self._tokens = tokens
        self._timeout = smtp_timeout
        self._context = context
        self._allow_plaintext_auth = allow_plaintext_auth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smtp")
        self._kept: _Kept | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- ResolveSmtp ----------------------------------------------------------------------------

    async def credentials(self, profile: Profile, *, refresh: bool = False) -> Credentials:
        """Resolve what the profile's auth type needs; errors propagate as domain errors.
        `refresh` bypasses the resolver's cache and the token cache (fresh reads, a new token)."""
        kind = profile.relay_authentication_type
        if kind is AuthType.ANONYMOUS:
            return Credentials()
        resolver = self._resolver
        resolve = resolver.resolve
        # One after the other: on the hot path both are cache hits that never suspend, and tasks
        # for a concurrent gather would cost more than they save; cold, each is one backend call.
        if kind is AuthType.BASIC:
            user_source = _required(profile.relay_username, "RelayUsername")
            password_source = _required(profile.relay_password, "RelayPassword")
            kept = self._kept
            if not refresh and kept is not None and kept.profile is profile and kept.generation == resolver.generation:
                left = kept.until - time.monotonic()
                if left > 0:
                    # What the two lookups would find: the same values, nothing expired.
                    resolver.reused(user_source, password_source)
                    return Credentials(kept.username, kept.password, cache_for=min(MAX_CACHE_FOR, left))
            generation, started = resolver.generation, time.monotonic()
            user = await resolve(user_source, refresh=refresh)
            password = await resolve(password_source, refresh=refresh)
            if resolver.generation == generation:
                # Neither read a backend and nothing changed meanwhile: keep them for the next
                # call. (`started` + expires_in is never later than a cached value's expiry.)
                self._kept = _Kept(profile, generation, started + min(user.expires_in, password.expires_in),
                                   user.value, password.value)
            return Credentials(user.value, password.value, cache_for=_cache_for(user.expires_in, password.expires_in))
        client_id = await resolve(_required(profile.client_id, "ClientId"), refresh=refresh)
        client_secret = await resolve(_required(profile.client_secret, "ClientSecret"), refresh=refresh)
        token = await self._tokens.token(_token_request(profile, client_id.value, client_secret.value), refresh=refresh)
        return Credentials(
            token=token,
            cache_for=_cache_for(client_id.expires_in, client_secret.expires_in, token.expires_in() - 60),
        )

    # --- TestSmtp -------------------------------------------------------------------------------

    async def test(self, profile: Profile, recipient: str) -> list[Step]:
        problems = mailbox_problems(recipient)
        if problems:
            raise InvalidArgument([violation("TestRecipient", p) for p in problems])
        steps: list[Step] = []
        kind = profile.relay_authentication_type

        started = time.monotonic()
        if kind is AuthType.ANONYMOUS:
            steps.append(Step("resolve", SKIPPED, message="anonymous relay: no credentials"))
            secrets: tuple = ()
        else:
            fields = (
                (_required(profile.relay_username, "RelayUsername"), _required(profile.relay_password, "RelayPassword"))
                if kind is AuthType.BASIC
                else (_required(profile.client_id, "ClientId"), _required(profile.client_secret, "ClientSecret"))
            )
            try:
                # One after the other, as in `credentials`: cache hits never suspend, and a gather's
                # tasks would cost more than they save; cold, each is one backend call.
                resolved = [await self._resolver.resolve(f) for f in fields]
            except SmtpConfigError as error:
                steps.append(_failed("resolve", started, str(error), "check the secret references with CheckSecret"))
                return steps
            secrets = tuple(r.value for r in resolved)
            where = ", ".join(sorted({r.provider_type for r in resolved}))
            steps.append(_ok("resolve", started, f"credentials resolved ({where})"))

        started = time.monotonic()
        token_request = None
        if kind is AuthType.OAUTH_CLIENT_CREDENTIALS:
            token_request = _token_request(profile, *secrets)
            try:
                token = await self._tokens.token(token_request)
            except SmtpConfigError as error:
                steps.append(_failed("token", started, str(error), _token_hint(str(error))))
                return steps
            steps.append(_ok("token", started, "token from cache" if not token.fetched else "token fetched"))
        else:
            steps.append(Step("token", SKIPPED, message="no OAuth for this authentication type"))

        loop = asyncio.get_running_loop()
        tokens = self._tokens

        def basic_again() -> tuple[Secret, Secret] | None:
            """The Basic credentials read again past every cache, after the relay refused them;
            None when they are what was refused."""
            future = asyncio.run_coroutine_threadsafe(self._refreshed_basic(profile, secrets, steps), loop)
            return future.result(self._timeout * 2)

        # Inline values have no cache to bypass: reading them again cannot change them.
        rotatable = kind is AuthType.BASIC and not all(
            isinstance(source, InlineSecret) for source in (profile.relay_username, profile.relay_password))

        def bearer(fresh: bool) -> Secret:
            assert token_request is not None
            if fresh:
                tokens.invalidate(token_request, token.value)
            future = asyncio.run_coroutine_threadsafe(tokens.token(token_request), loop)
            return future.result(self._timeout * 2).value

        exchange = Exchange(
            host=profile.host,
            port=profile.port,
            use_ssl=profile.use_ssl,
            sender_account=profile.sender_account,
            sender_name=profile.sender_name,
            recipient=recipient,
            timeout=self._timeout,
            context=self._context,
            allow_plaintext_auth=self._allow_plaintext_auth,
            implicit_tls_ports=self._implicit_tls_ports,
            username=secrets[0] if kind is AuthType.BASIC else None,
            password=secrets[1] if kind is AuthType.BASIC else None,
            xoauth2_user=profile.sender_account,
            bearer=bearer if kind is AuthType.OAUTH_CLIENT_CREDENTIALS else None,
            basic_again=basic_again if rotatable else None,
            steps=steps,
        )
        # The steps arrive before the thread's QUIT (`Exchange.answer`), or with the thread's end
        # when the exchange stopped before a session or raised.
        answered: asyncio.Future[list[Step]] = loop.create_future()

        def answer(final: list[Step]) -> None:  # on the SMTP thread
            if not loop.is_closed():  # closed: the server stopped, nobody waits any more
                loop.call_soon_threadsafe(_settle, answered, final)

        exchange.answer = answer
        loop.run_in_executor(self._pool, smtp_check.run, exchange).add_done_callback(
            lambda ended: _settle_from(answered, ended))
        try:
            return await answered
        except asyncio.CancelledError:
            # The caller is gone: its thread must not go on to send a message nobody asked for
            # any more, nor hold a pool thread until the SMTP timeout.
            smtp_check.abandon(exchange)
            raise

    async def _refreshed_basic(
        self, profile: Profile, refused: tuple[Secret, ...], steps: list[Step],
    ) -> tuple[Secret, Secret] | None:
        """Basic credentials resolved again with `refresh`, reported as a step of their own; None
        when they are the ones the relay refused (a second AUTH with them would only add a failed
        login at the relay)."""
        started = time.monotonic()
        fields = (_required(profile.relay_username, "RelayUsername"), _required(profile.relay_password, "RelayPassword"))
        try:
            user, password = [await self._resolver.resolve(f, refresh=True) for f in fields]
        except SmtpConfigError as error:
            steps.append(Step("resolve", SKIPPED, time.monotonic() - started, message=(
                f"the relay refused the credentials (535); resolving them again failed: {error}")))
            raise
        if (user.value, password.value) == refused:
            steps.append(_ok("resolve", started, "the relay refused the credentials (535); resolved again, bypassing"
                                                 " caches, they are unchanged: no second try"))
            return None
        steps.append(_ok("resolve", started, "the relay refused the credentials (535): resolved them again,"
                                             " bypassing caches, for one more try"))
        return user.value, password.value


def _settle(answered: asyncio.Future[list[Step]], steps: list[Step]) -> None:
    if not answered.done():
        answered.set_result(steps)


def _settle_from(answered: asyncio.Future[list[Step]], ended: asyncio.Future[list[Step]]) -> None:
    """`answered` as the thread ended, unless the steps came first or the caller left."""
    if ended.cancelled():  # never started: the pool was shut down
        if not answered.done():
            answered.cancel()
        return
    error = ended.exception()  # read in every case, so a caller gone leaves no unread error behind
    if answered.done():
        return
    if error is not None:
        answered.set_exception(error)
    else:
        answered.set_result(ended.result())


def succeeded(steps: list[Step]) -> bool:
    return bool(steps) and all(s.outcome != FAILED for s in steps) and steps[-1].name == "send"


def _required(source: SecretSource | None, name: str) -> SecretSource:
    """A secret the profile's auth type needs. Validation refuses a profile without it on write,
    so a stored profile that lacks one is corrupt: say which field, rather than fail inside a provider."""
    if source is None:
        raise FailedPrecondition(f"the stored profile has no {name}, which its RelayAuthenticationType needs")
    return source


def _token_request(profile: Profile, client_id: Secret, client_secret: Secret) -> TokenRequest:
    return TokenRequest(
        profile.token_endpoint, client_id, client_secret, profile.scope, profile.audience, profile.request_headers
    )


def _cache_for(*seconds: float) -> float:
    finite = [s for s in seconds if not math.isinf(s)]
    return max(0.0, min([MAX_CACHE_FOR, *finite]))


def _ok(name: str, started: float, message: str) -> Step:
    return Step(name, OK, time.monotonic() - started, message=message)


def _failed(name: str, started: float, message: str, hint: str) -> Step:
    return Step(name, FAILED, time.monotonic() - started, message=message, hint=hint)


def _token_hint(message: str) -> str:
    if "invalid_client" in message:
        return "the identity provider refused the client: check ClientId and ClientSecret (expired or revoked?)"
    if "invalid_scope" in message:
        return "the identity provider refused the scope: check Scope"
    if "cannot be reached" in message or "did not answer" in message:
        return "check TokenEndpoint and that the identity provider is reachable from here"
    return "see the identity provider's error above"
