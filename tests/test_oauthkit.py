"""Self-tests of the OAuth 2.0 token endpoint kit, driven by Authlib's httpx client as the service will.

Everything is real: the endpoint listens on 127.0.0.1, the HTTPS case uses a throwaway CA made here.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError

with warnings.catch_warnings():
    # Authlib announces a rename of its httpx integration on import; the client works as before.
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kits.oauthkit import ECHO_FORGED_LINE, REDACTED, TokenEndpoint

CLIENT_ID = "smtp-relay-client"
SECRET = "s3cret-value-0123456789"
OTHER_ID = "other-client"
OTHER_SECRET = "another-secret-abcdef"
CLIENTS = {CLIENT_ID: SECRET, OTHER_ID: OTHER_SECRET}


# ----- throwaway CA and a leaf for localhost / 127.0.0.1 ---------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName],
          now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """ca.pem; leaf for localhost + 127.0.0.1 (cert/key); leaf for localhost only (name_cert/name_key)."""
    directory = tmp_path_factory.mktemp("oauthkit-tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("oauthkit test CA")).issuer_name(_name("oauthkit test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": directory / "ca.pem"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves = {
        "": [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        "name_": [x509.DNSName("localhost")],
    }
    for prefix, names in leaves.items():
        cert, key = _leaf(ca_cert, ca_key, names, now)
        files[prefix + "cert"] = directory / f"{prefix}leaf.pem"
        files[prefix + "key"] = directory / f"{prefix}leaf-key.pem"
        files[prefix + "cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(files[prefix + "key"], key)
    return {k: str(v) for k, v in files.items()}


# ----- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def idp() -> Iterator[TokenEndpoint]:
    with TokenEndpoint(CLIENTS, expires_in=300) as endpoint:
        yield endpoint


def client(method: str = "client_secret_basic", client_id: str = CLIENT_ID, secret: str = SECRET,
           **kwargs: Any) -> OAuth2Client:
    """What the service will build: an httpx-based Authlib client, short timeout, no proxies."""
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("trust_env", False)
    return OAuth2Client(client_id=client_id, client_secret=secret, token_endpoint_auth_method=method,
                        **kwargs)


def fetch(idp: TokenEndpoint, method: str = "client_secret_basic", **kwargs: Any) -> dict[str, Any]:
    fetch_kwargs = {k: kwargs.pop(k) for k in ("scope", "audience", "headers") if k in kwargs}
    with client(method, **kwargs) as c:
        return c.fetch_token(idp.url, grant_type="client_credentials", **fetch_kwargs)


def assert_no_secret(idp: TokenEndpoint, *values: str) -> None:
    dump = repr(idp.requests) + repr(idp.issued) + repr(idp)
    for value in values or (SECRET, OTHER_SECRET):
        assert value not in dump


# ----- issuing tokens --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_token_with_scope_audience_and_custom_headers(idp: TokenEndpoint, method: str) -> None:
    custom = {"X-Tenant": "contoso", "X-Request-Id": "abc-123", "Accept": "application/json"}
    token = fetch(idp, method, scope="https://outlook.office365.com/.default SMTP.Send",
                  audience="api://smtp-relay", headers=custom)

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["scope"] == "https://outlook.office365.com/.default SMTP.Send"
    assert isinstance(token["expires_at"], int) and token["expires_at"] > time.time() + 290
    assert "refresh_token" not in token
    assert idp.token_valid(token["access_token"])
    assert idp.token_valid(token["access_token"], scope="SMTP.Send", audience="api://smtp-relay")
    assert not idp.token_valid(token["access_token"], scope="Mail.Read")
    assert not idp.token_valid(token["access_token"], audience="api://elsewhere")
    assert not idp.token_valid("not-a-token")

    (req,) = idp.requests
    assert (req.method, req.path, req.status, req.error, req.outcome) == ("POST", "/token", 200, None, "token")
    assert req.auth_method == method and req.client_id == CLIENT_ID
    assert req.form["grant_type"] == "client_credentials"
    assert req.scope == "https://outlook.office365.com/.default SMTP.Send"
    assert req.audience == "api://smtp-relay"
    assert req.header("x-tenant") == "contoso" and req.headers["x-request-id"] == "abc-123"
    assert req.header("Content-Type", "").startswith("application/x-www-form-urlencoded")
    assert ("X-Tenant", "contoso") in req.raw_headers or ("x-tenant", "contoso") in req.raw_headers
    assert req.tls is False and abs(req.time - time.time()) < 5
    if method == "client_secret_basic":
        assert req.header("authorization") == f"Basic {REDACTED}"
        assert "client_secret" not in req.form
    else:
        assert req.header("authorization") is None
        assert req.form["client_id"] == CLIENT_ID and req.form["client_secret"] == REDACTED
    (issued,) = idp.issued
    assert (issued.client_id, issued.audience, issued.scope) == (
        CLIENT_ID, "api://smtp-relay", "https://outlook.office365.com/.default SMTP.Send")
    assert issued.access_token == token["access_token"] and token["access_token"] not in repr(issued)
    assert_no_secret(idp)


def test_headers_given_to_the_client_go_with_authlib_defaults(idp: TokenEndpoint) -> None:
    # fetch_token(headers=...) *replaces* Authlib's default Accept/Content-Type headers; headers on
    # the httpx client are merged with them. Both reach the IdP.
    with client(headers={"X-Tenant": "fabrikam"}) as c:
        c.fetch_token(idp.url, grant_type="client_credentials")
        c.fetch_token(idp.url, grant_type="client_credentials", headers={"X-Call": "2"})
    first, second = idp.requests
    assert first.header("x-tenant") == "fabrikam" and first.header("accept") == "application/json"
    assert second.header("x-tenant") == "fabrikam" and second.header("x-call") == "2"
    assert second.header("accept") == "*/*"  # Authlib's default went away with headers=
    assert "scope" not in first.form and "audience" not in first.form


def test_each_fetch_issues_a_new_token_and_records_it(idp: TokenEndpoint) -> None:
    with client() as c:
        a = c.fetch_token(idp.url, grant_type="client_credentials")["access_token"]
        b = c.fetch_token(idp.url, grant_type="client_credentials")["access_token"]
    assert a != b and len(a) >= 40
    assert [t.access_token for t in idp.issued] == [a, b]
    assert len(idp.token_requests) == 2
    idp.clear_requests()
    assert idp.requests == []


def test_allowed_auth_methods_are_enforced() -> None:
    with TokenEndpoint(CLIENTS, auth_methods=["client_secret_post"]) as idp:
        assert fetch(idp, "client_secret_post")["access_token"]
        with pytest.raises(OAuthError) as info:
            fetch(idp, "client_secret_basic")
        assert info.value.error == "invalid_client"
        assert idp.requests[-1].status == 401 and idp.requests[-1].auth_method == "client_secret_basic"
    with TokenEndpoint(CLIENTS, auth_methods=["client_secret_basic"]) as idp:
        assert fetch(idp, "client_secret_basic")["access_token"]
        with pytest.raises(OAuthError, match="invalid_client"):
            fetch(idp, "client_secret_post")


def test_special_characters_in_secrets_and_basic_encoding() -> None:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded *before* Basic. Authlib 1.9 does not encode
    # them, so a secret with '+' or '%' fails at a strict endpoint unless the client encodes itself.
    secret = "p+ss%2Fw:rd~é"

    def rfc6749_basic(c: Any, method: str, uri: str, headers: Any, body: str) -> tuple[Any, Any, str]:
        user = urllib.parse.quote_plus(c.client_id, safe="")
        password = urllib.parse.quote_plus(c.client_secret, safe="")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return uri, headers, body

    with TokenEndpoint({"c 1": secret}) as strict:
        with pytest.raises(OAuthError, match="invalid_client"):
            fetch(strict, client_id="c 1", secret=secret)
        assert fetch(strict, rfc6749_basic, client_id="c 1", secret=secret)["access_token"]
        assert fetch(strict, "client_secret_post", client_id="c 1", secret=secret)["access_token"]
        assert strict.requests[1].auth_method == "client_secret_basic"
        assert strict.requests[1].client_id == "c 1"
        assert_no_secret(strict, secret, urllib.parse.quote_plus(secret))
    with TokenEndpoint({"c1": secret}, basic_decoding="raw") as raw:
        # Authlib also encodes the Basic credentials as Latin-1, not UTF-8: é arrives as one byte the
        # kit (UTF-8, like most providers) cannot decode, so even a lenient endpoint refuses it.
        with pytest.raises(OAuthError, match="invalid_client"):
            fetch(raw, client_id="c1", secret=secret)
    ascii_secret = "p+ss%2Fw:rd~"
    with TokenEndpoint({"c1": ascii_secret}, basic_decoding="either") as lenient:
        assert fetch(lenient, client_id="c1", secret=ascii_secret)["access_token"]
        assert fetch(lenient, rfc6749_basic, client_id="c1", secret=ascii_secret)["access_token"]


# ----- failures an identity provider produces --------------------------------------------------

def test_wrong_secret_is_invalid_client_with_401(idp: TokenEndpoint) -> None:
    for method in ("client_secret_basic", "client_secret_post"):
        with pytest.raises(OAuthError) as info:
            fetch(idp, method, secret="wrong-secret-value")
        error = info.value
        assert error.error == "invalid_client"
        assert error.description == "client authentication failed"
        assert str(error) == "invalid_client: client authentication failed"
    for req in idp.requests:
        assert (req.status, req.error, req.outcome) == (401, "invalid_client", "error")
    assert idp.issued == []
    assert_no_secret(idp, SECRET, "wrong-secret-value")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_echo_credentials_quotes_what_the_client_sent(method: str) -> None:
    with TokenEndpoint(CLIENTS, echo_credentials=True) as idp, pytest.raises(OAuthError) as info:
        fetch(idp, method, secret="wrong/secret value")
    basic = base64.b64encode(f"{CLIENT_ID}:wrong/secret value".encode()).decode()
    lines = info.value.description.split("\r\n")
    assert info.value.error == "invalid_client" and lines[1] == ECHO_FORGED_LINE
    assert f"authorization: Basic {basic}\nthe request was: grant_type=client_credentials" in lines[2]
    if method == "client_secret_post":
        assert lines[0].endswith("secret tried: wrong/secret value")
        assert "client_secret=wrong%2Fsecret+value" in lines[2]
    assert_no_secret(idp, SECRET, "wrong/secret value")  # the records stay clean


def test_unknown_client_and_no_client_authentication(idp: TokenEndpoint) -> None:
    with pytest.raises(OAuthError, match="invalid_client"):
        fetch(idp, client_id="nobody", secret=SECRET)
    with pytest.raises(OAuthError, match="invalid_client"):
        fetch(idp, "none")
    assert idp.requests[-1].auth_method == "none"
    raw = httpx.post(idp.url, data={"grant_type": "client_credentials"})
    assert raw.status_code == 401 and raw.json()["error"] == "invalid_client"
    assert raw.headers["www-authenticate"].startswith("Basic")
    assert raw.headers["cache-control"] == "no-store"


def test_revoked_client_fails_and_rotation_restores_it(idp: TokenEndpoint) -> None:
    before = fetch(idp)["access_token"]
    idp.revoke(CLIENT_ID)
    for method in ("client_secret_basic", "client_secret_post"):
        with pytest.raises(OAuthError) as info:
            fetch(idp, method)
        assert info.value.error == "invalid_client"
    assert fetch(idp, client_id=OTHER_ID, secret=OTHER_SECRET)["access_token"]  # others unaffected
    assert idp.token_valid(before)  # revoking the secret does not revoke issued tokens
    idp.add_client(CLIENT_ID, "rotated-secret-9876")
    with pytest.raises(OAuthError, match="invalid_client"):
        fetch(idp)  # the old secret stays dead
    assert fetch(idp, secret="rotated-secret-9876")["access_token"]
    assert_no_secret(idp, SECRET, "rotated-secret-9876")


def test_scope_and_audience_policy() -> None:
    with TokenEndpoint(CLIENTS, allowed_scopes={"SMTP.Send", "offline"}, default_scope="SMTP.Send",
                       required_audience={"api://smtp", "api://smtp2"}) as idp:
        ok = fetch(idp, audience="api://smtp2")
        assert ok["scope"] == "SMTP.Send" and idp.token_valid(ok["access_token"], scope="SMTP.Send")
        with pytest.raises(OAuthError) as info:
            fetch(idp, scope="SMTP.Send Mail.ReadWrite", audience="api://smtp")
        assert (info.value.error, info.value.description) == ("invalid_scope", "scope not allowed: Mail.ReadWrite")
        with pytest.raises(OAuthError) as info:
            fetch(idp, scope="SMTP.Send")
        assert (info.value.error, info.value.description) == ("invalid_request", "missing audience")
        with pytest.raises(OAuthError) as info:
            fetch(idp, audience="api://other")
        assert info.value.error == "invalid_request"
        assert [r.status for r in idp.requests] == [200, 400, 400, 400]
    with TokenEndpoint(CLIENTS, required_audience="api://smtp", audience_error="invalid_target") as idp:
        with pytest.raises(OAuthError, match="invalid_target"):
            fetch(idp, audience="api://other")


def test_malformed_requests_get_rfc6749_errors(idp: TokenEndpoint) -> None:
    basic = httpx.BasicAuth(CLIENT_ID, SECRET)
    with pytest.raises(OAuthError) as info:
        with client() as c:
            c.fetch_token(idp.url, grant_type="password", username="u", password="p")
    assert info.value.error == "unsupported_grant_type"
    cases = [
        (dict(data={"scope": "x"}, auth=basic), 400, "invalid_request"),  # no grant_type
        (dict(json={"grant_type": "client_credentials"}, auth=basic), 400, "invalid_request"),
        (dict(content=b"grant_type=client_credentials&grant_type=client_credentials", auth=basic,
              headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, "invalid_request"),
        (dict(data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET},
              auth=basic), 400, "invalid_request"),  # two authentication methods
        (dict(data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET},
              params={"client_secret": SECRET}), 400, "invalid_request"),  # secret in the URI
        (dict(data={"grant_type": "client_credentials", "scope": 'bad"scope'}, auth=basic), 400, "invalid_scope"),
    ]
    for kwargs, status, error in cases:
        response = httpx.post(idp.url, **kwargs)
        assert (response.status_code, response.json()["error"]) == (status, error), kwargs
    get = httpx.get(idp.url)
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    assert httpx.post(idp.base_url + "/other", data={}).status_code == 404
    assert idp.requests[-1].path == "/other" and idp.requests[-2].method == "GET"
    in_uri = [r for r in idp.requests if r.query]
    assert len(in_uri) == 1 and in_uri[0].query == {"client_secret": REDACTED}
    assert in_uri[0].form["client_secret"] == REDACTED and in_uri[0].auth_method == "client_secret_post"
    assert_no_secret(idp)


def test_forced_oauth_errors_and_http_failures(idp: TokenEndpoint) -> None:
    idp.force_error("unauthorized_client", "client not allowed this grant", times=1)
    with pytest.raises(OAuthError) as info:
        fetch(idp)
    assert (info.value.error, info.value.description) == ("unauthorized_client", "client not allowed this grant")
    assert idp.requests[-1].outcome == "forced" and idp.requests[-1].error == "unauthorized_client"
    assert fetch(idp)["access_token"]  # times=1: only once

    # Authlib raises OAuthError only for 4xx JSON: a 5xx is httpx.HTTPStatusError even with a JSON
    # error body (the body is still on the exception's response).
    idp.force_error("temporarily_unavailable", "try later", status=503, times=1)
    with pytest.raises(httpx.HTTPStatusError) as http_info:
        fetch(idp)
    assert http_info.value.response.status_code == 503
    assert http_info.value.response.json()["error"] == "temporarily_unavailable"

    idp.force_http_status(500, "<html>upstream crashed</html>", content_type="text/html", times=2)
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError) as http_info:
            fetch(idp)
        assert http_info.value.response.status_code == 500
    idp.force_http_status(429, "slow down", headers={"Retry-After": "1"}, times=1)
    with pytest.raises(httpx.HTTPStatusError) as http_info:  # non-JSON 4xx: also HTTPStatusError
        fetch(idp)
    assert http_info.value.response.headers["retry-after"] == "1"
    idp.force_http_status(200, "not json", times=1)
    with pytest.raises(ValueError, match="not a JSON object"):
        fetch(idp)

    idp.force_error("server_error")  # until cleared
    for _ in range(2):
        with pytest.raises(OAuthError, match="server_error"):
            fetch(idp)
    idp.clear_failures()
    assert fetch(idp)["access_token"]


def test_dropped_connection(idp: TokenEndpoint) -> None:
    idp.force_disconnect(times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        fetch(idp)
    assert idp.requests[-1].outcome == "disconnected" and idp.requests[-1].status is None
    assert fetch(idp)["access_token"]


def test_slow_endpoint_times_out_the_client(idp: TokenEndpoint) -> None:
    idp.delay = 1.0
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        fetch(idp, timeout=0.2)
    assert time.monotonic() - started < 0.9
    idp.delay = 0.3
    assert fetch(idp, timeout=2.0)["access_token"]  # slow but in time
    idp.delay = 5.0
    with pytest.raises(httpx.TimeoutException):
        fetch(idp, timeout=0.1)
    started = time.monotonic()
    idp.stop()  # does not wait for the sleeping handler
    assert time.monotonic() - started < 1.0


def test_endpoint_down_is_refused_fast_and_comes_back_on_the_same_url() -> None:
    idp = TokenEndpoint(CLIENTS).start()
    url = idp.url
    idp.stop()
    idp.stop()  # idempotent
    assert not idp.running and idp.url == url
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        fetch(idp)
    assert time.monotonic() - started < 1.0
    idp.start()
    try:
        assert idp.url == url and fetch(idp)["access_token"]
    finally:
        idp.stop()


# ----- expiry ---------------------------------------------------------------------------------

def test_short_lived_tokens_expire_and_a_new_one_is_issued() -> None:
    with TokenEndpoint(CLIENTS, expires_in=1) as idp:
        first = fetch(idp, scope="SMTP.Send")
        assert first["expires_in"] == 1 and idp.token_valid(first["access_token"])
        info = idp.token_info(first["access_token"])
        assert info is not None and 0.9 < info.expires_at - info.issued_at <= 1.0
        time.sleep(max(0.0, info.expires_at - time.time()) + 0.05)
        assert not idp.token_valid(first["access_token"]) and info.expired
        second = fetch(idp, scope="SMTP.Send")
        assert second["access_token"] != first["access_token"]
        assert idp.token_valid(second["access_token"])
        assert [t.expired for t in idp.issued] == [True, False]


def test_expire_all_invalidates_issued_tokens_at_once(idp: TokenEndpoint) -> None:
    tokens = [fetch(idp)["access_token"] for _ in range(2)]
    assert all(idp.token_valid(t) for t in tokens)
    idp.expire_all()
    assert not any(idp.token_valid(t) for t in tokens)
    fresh = fetch(idp)["access_token"]
    assert idp.token_valid(fresh)  # only tokens issued before expire_all() are affected
    idp.expires_in = 42  # changeable while running
    assert fetch(idp)["expires_in"] == 42


def test_endpoint_may_omit_expires_in() -> None:
    with TokenEndpoint(CLIENTS, include_expires_in=False, expires_in=60) as quiet:
        token = fetch(quiet)
        assert "expires_in" not in token and "expires_at" not in token
        assert quiet.token_valid(token["access_token"])  # server-side lifetime still applies


# ----- HTTPS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url_host", ["127.0.0.1", "localhost"])
def test_https_with_the_test_ca(tls_files: dict[str, str], url_host: str) -> None:
    with TokenEndpoint(CLIENTS, certfile=tls_files["cert"], keyfile=tls_files["key"], url_host=url_host) as idp:
        assert idp.url.startswith(f"https://{url_host}:")
        trusted = ssl.create_default_context(cafile=tls_files["ca"])
        token = fetch(idp, verify=trusted, audience="api://smtp")
        assert idp.token_valid(token["access_token"], audience="api://smtp")
        assert idp.requests[-1].tls is True

        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(idp)  # system trust store only
        deadline = time.monotonic() + 2
        while idp.connection_errors < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert idp.connection_errors == 1  # the refused handshake, nothing logged
        assert len(idp.requests) == 1
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(idp.url.replace("https://", "http://"), data={})  # plain HTTP to a TLS port
        assert fetch(idp, verify=trusted)["access_token"]  # still serving


def test_https_rejects_a_name_the_certificate_lacks(tls_files: dict[str, str]) -> None:
    trusted = ssl.create_default_context(cafile=tls_files["ca"])
    with TokenEndpoint(CLIENTS, certfile=tls_files["name_cert"], keyfile=tls_files["name_key"]) as idp:
        assert idp.url.startswith("https://127.0.0.1:")  # the certificate names only localhost
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(idp, verify=trusted)
        idp.url_host = "localhost"
        assert fetch(idp, verify=trusted)["access_token"]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        TokenEndpoint(CLIENTS, auth_methods=["private_key_jwt"])
    with pytest.raises(ValueError):
        TokenEndpoint(CLIENTS, certfile="x.pem")
    with pytest.raises(ValueError):
        TokenEndpoint(CLIENTS, basic_decoding="latin1")
    with pytest.raises(RuntimeError):
        TokenEndpoint(CLIENTS).url  # noqa: B018 - not started
    with TokenEndpoint(CLIENTS, path="/oauth2/v2.0/token") as idp:
        assert idp.url.endswith("/oauth2/v2.0/token")
        assert fetch(idp)["access_token"]
        with pytest.raises(RuntimeError):
            idp.start()
