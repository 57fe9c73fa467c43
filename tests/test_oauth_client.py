"""The service's OAuth client-credentials client against a real token endpoint on loopback."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from smtpconfig.core.errors import Unavailable
from smtpconfig.core.secret import Secret
from smtpconfig.domain.model import RequestHeader
from smtpconfig.outbound.oauth import TokenClient, TokenError, TokenRequest
from tests.kits.oauthkit import TokenEndpoint

CLIENT_SECRET = "PLANTED-client-secret-0a1b"


def request_for(endpoint: TokenEndpoint, secret: str = CLIENT_SECRET, **kw) -> TokenRequest:
    return TokenRequest(endpoint.url, Secret("smtp-relay"), Secret(secret), **kw)


@pytest.fixture
def endpoint():
    with TokenEndpoint({"smtp-relay": CLIENT_SECRET}, expires_in=3600) as server:
        yield server


def test_fetches_with_scope_audience_and_headers_and_caches(endpoint: TokenEndpoint) -> None:
    client = TokenClient(timeout=5)
    request = request_for(endpoint, scope="https://outlook.office365.com/.default", audience="api://smtp",
                          headers=(RequestHeader("X-Tenant", "t1"),))

    async def scenario():
        first = await client.token(request)
        second = await client.token(request)
        return first, second

    first, second = asyncio.run(scenario())
    assert first.fetched and not second.fetched and first.value == second.value
    assert endpoint.token_valid(first.value.reveal())
    assert first.token_type == "Bearer" and 3500 < first.expires_in() <= 3600
    (recorded,) = endpoint.token_requests
    assert recorded.auth_method == "client_secret_post"  # works with Entra ID, Google and Keycloak
    assert recorded.scope == "https://outlook.office365.com/.default" and recorded.audience == "api://smtp"
    assert recorded.header("X-Tenant") == "t1"


def test_concurrent_callers_share_one_fetch(endpoint: TokenEndpoint) -> None:
    client = TokenClient(timeout=5)
    endpoint.delay = 0.3

    async def scenario():
        return await asyncio.gather(*(client.token(request_for(endpoint)) for _ in range(50)))

    tokens = asyncio.run(scenario())
    assert len({t.value.reveal() for t in tokens}) == 1
    assert len(endpoint.token_requests) == 1


def test_short_lived_tokens_are_refreshed_and_invalidated_ones_replaced(endpoint: TokenEndpoint) -> None:
    endpoint.expires_in = 2
    client = TokenClient(timeout=5)
    request = request_for(endpoint)

    async def scenario():
        first = await client.token(request)
        again = await client.token(request)  # well inside the first half of its life: cached
        await asyncio.sleep(1.1)  # past halfway: refreshed before it can expire in use
        later = await client.token(request)
        client.invalidate(request, later.value)  # e.g. the SMTP server answered 535 to XOAUTH2
        fresh = await client.token(request)
        return first, again, later, fresh

    first, again, later, fresh = asyncio.run(scenario())
    assert not again.fetched and later.fetched and fresh.fetched
    assert len({first.value.reveal(), later.value.reveal(), fresh.value.reveal()}) == 3
    assert len(endpoint.token_requests) == 3


def test_identity_provider_errors_carry_their_oauth_code(endpoint: TokenEndpoint) -> None:
    client = TokenClient(timeout=5)
    with pytest.raises(TokenError) as wrong:
        asyncio.run(client.token(request_for(endpoint, secret="not-the-secret")))
    assert wrong.value.error == "invalid_client"
    endpoint.revoke("smtp-relay")
    with pytest.raises(TokenError) as revoked:
        asyncio.run(client.token(request_for(endpoint)))
    assert revoked.value.error == "invalid_client"
    endpoint.restore("smtp-relay")
    endpoint.force_error("invalid_scope", "scope not allowed\r\nInjected: header")
    with pytest.raises(TokenError) as scope:
        asyncio.run(client.token(request_for(endpoint, scope="mail.send")))
    assert scope.value.error == "invalid_scope" and "\n" not in str(scope.value)
    for error in (wrong.value, revoked.value, scope.value):
        assert CLIENT_SECRET not in str(error) and "not-the-secret" not in str(error)


def test_endpoint_down_slow_or_broken_is_unavailable(endpoint: TokenEndpoint) -> None:
    client = TokenClient(timeout=1)
    endpoint.force_http_status(500)
    with pytest.raises(Unavailable, match="HTTP 500"):
        asyncio.run(client.token(request_for(endpoint)))
    endpoint.clear_failures()
    endpoint.delay = 3
    with pytest.raises(Unavailable, match="did not answer within 1s"):
        asyncio.run(client.token(request_for(endpoint)))
    endpoint.delay = 0
    endpoint.stop()
    with pytest.raises(Unavailable, match="cannot be reached"):
        asyncio.run(client.token(request_for(endpoint)))


def test_https_endpoint_is_verified_against_the_ca_bundle(tmp_path) -> None:
    from tests.kits.testca import make_pki

    pki = make_pki(tmp_path)
    with TokenEndpoint({"smtp-relay": CLIENT_SECRET}, certfile=pki.localhost.cert, keyfile=pki.localhost.key) as server:
        context = ssl.create_default_context(cafile=str(pki.ca))
        trusted = asyncio.run(TokenClient(timeout=5, context=context).token(request_for(server)))
        assert server.token_valid(trusted.value.reveal())
        with pytest.raises(Unavailable, match="cannot be reached"):
            asyncio.run(TokenClient(timeout=5).token(request_for(server)))  # system CAs do not know it


def test_oversized_token_response_is_refused(endpoint: TokenEndpoint) -> None:
    padding = "x" * (100 * 1024)
    endpoint.force_http_status(200, body='{"access_token": "' + padding + '", "token_type": "Bearer"}',
                               content_type="application/json")
    with pytest.raises(Unavailable, match="larger than 65536 bytes"):
        asyncio.run(TokenClient(timeout=5).token(request_for(endpoint)))
