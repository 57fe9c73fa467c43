"""What Vault and the network answered, as the plugin API's errors: one table, one function.

Messages name the host, the mount, the path, the key and Vault's own error text, never a secret
value or credential: every message is masked (`smtpconfig.plugin.mask_secrets`) with each credential
the provider holds at that moment, the ones it obtained at run time included (the JWT read from
JwtFile, the token a login returned), and the hvac or requests exception is not chained (its
attributes hold the raw response).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import hvac.exceptions as vault
import requests.exceptions as http

from smtpconfig.plugin import (
    AccessDenied,
    BadParameters,
    ProviderError,
    ProviderUnavailable,
    SecretNotFound,
    mask_secrets,
)

from .transport import Redirected


@dataclass(frozen=True)
class Rule:
    error: type[BaseException]
    raises: type[ProviderError]
    message: str
    parameter: str | None = None
    #: Narrows the rule to errors of its class for which this is true.
    when: Callable[[BaseException], bool] | None = None


# What OpenSSL says when a TLS client hello is answered by a plain-HTTP server ("HTTP/1.1 400 ..."
# read as a TLS record): OpenSSL up to 3.1, then 3.2 and later.
_PLAIN_HTTP_ANSWER = ("WRONG_VERSION_NUMBER", "wrong version number", "RECORD_LAYER_FAILURE", "record layer failure")


def _plain_http_answer(error: BaseException) -> bool:
    text = str(error)
    return any(marker in text for marker in _PLAIN_HTTP_ANSWER)


# First match wins, so subclasses come first (SSLError and ConnectTimeout are ConnectionErrors).
# Placeholders: {what} the secret or login, {host}, {timeout}, {detail} Vault's scrubbed text,
# {plain} the host with http:// (a Host without a scheme gets https://, which a dev server lacks).
_TRANSPORT = (
    Rule(Redirected, ProviderUnavailable, "{detail}"),
    Rule(vault.VaultDown, ProviderUnavailable, "Vault at {host} is sealed or unavailable (HTTP 503): {detail}"),
    Rule(vault.VaultNotInitialized, ProviderUnavailable, "Vault at {host} is not initialized (HTTP 501)"),
    Rule(vault.InternalServerError, ProviderUnavailable, "Vault at {host} failed (HTTP 500) on {what}: {detail}"),
    Rule(vault.BadGateway, ProviderUnavailable, "bad gateway (HTTP 502) between here and Vault at {host}"),
    Rule(vault.RateLimitExceeded, ProviderUnavailable, "Vault at {host} is rate-limiting (HTTP 429) {what}"),
    Rule(http.SSLError, ProviderUnavailable, "TLS handshake failed for {host}: the server answered in plain HTTP; "
                                             "if this Vault serves plain HTTP (a dev server), set Host to {plain} "
                                             "(https:// is assumed when Host has no scheme)", when=_plain_http_answer),
    Rule(http.SSLError, ProviderUnavailable, "TLS {detail} for {host}; set CaBundle to the CA that signed "
                                             "Vault's certificate"),
    Rule(http.Timeout, ProviderUnavailable, "no answer from Vault at {host} within {timeout:g}s ({what})"),
    Rule(http.ConnectionError, ProviderUnavailable, "cannot connect to Vault at {host}: {detail}"),
)
_LOGIN = (
    Rule(vault.InvalidRequest, AccessDenied, "Vault refused {what}: {detail}"),
    Rule(vault.Unauthorized, AccessDenied, "Vault refused {what}: {detail}"),
    Rule(vault.Forbidden, AccessDenied, "Vault refused {what}: {detail}"),
    Rule(vault.InvalidPath, AccessDenied, "Vault has no such login for {what}; check AuthMount and Role"),
    *_TRANSPORT,
    Rule(vault.VaultError, ProviderUnavailable, "unexpected answer from Vault at {host} to {what}: {detail}"),
)
_READ = (
    Rule(vault.InvalidPath, SecretNotFound, "Vault has no {what}: {detail}"),
    Rule(vault.Forbidden, AccessDenied, "permission denied reading {what}: {detail}"),
    Rule(vault.Unauthorized, AccessDenied, "Vault refused the credentials reading {what}: {detail}"),
    Rule(vault.InvalidRequest, BadParameters, "Vault rejected the read of {what}: {detail}", "Secret"),
    *_TRANSPORT,
    Rule(vault.VaultError, ProviderUnavailable, "unexpected answer from Vault at {host} to {what}: {detail}"),
)


def _detail(error: BaseException) -> str:
    if isinstance(error, Redirected):
        return str(error)
    if isinstance(error, vault.InvalidPath):
        # KV v2 answers 404 with the version's metadata (never its data) when it is deleted or destroyed.
        body = error.json if isinstance(error.json, dict) else {}
        metadata = (body.get("data") or {}).get("metadata") or {}
        if metadata.get("destroyed"):
            return f"version {metadata.get('version')} is destroyed"
        if metadata.get("deletion_time"):
            return f"version {metadata.get('version')} is deleted"
        if not error.errors:
            return "not found"
    if isinstance(error, vault.VaultError):
        errors = error.errors if isinstance(error.errors, list) else [error.errors] if error.errors else []
        text = "; ".join(str(e) for e in errors) or str(error.args[0] if error.args else "") or "no detail"
        # Vault wraps some errors as "1 error occurred:\n\t* permission denied".
        text = re.sub(r"^\d+ errors? occurred:\s*", "", text.strip()).replace("\n\t* ", "; ").lstrip("* ")
        return text  # cut by the masking, after it: a cut first could leave part of a credential
    if isinstance(error, http.SSLError):
        verify = "CERTIFICATE_VERIFY_FAILED" in str(error)
        return "certificate verification failed" if verify else "handshake failed"
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
    return errno.group(0) if errno else type(error).__name__


def translate(error: BaseException, *, login: bool, what: str, host: str, timeout: float,
              secrets: tuple[str, ...]) -> ProviderError | None:
    """The provider error for `error`, or None when it is not Vault's or the network's doing."""
    for rule in _LOGIN if login else _READ:
        if isinstance(error, rule.error) and (rule.when is None or rule.when(error)):
            detail = mask_secrets(_detail(error), *secrets)
            plain = re.sub(r"^https://", "http://", host)
            message = rule.message.format(what=what, host=host, timeout=timeout, detail=detail, plain=plain)
            message = mask_secrets(message, *secrets)
            if rule.raises is BadParameters:
                return BadParameters(message, rule.parameter)
            return rule.raises(message)
    return None


def no_answer(*, what: str, host: str, timeout: float, secrets: tuple[str, ...]) -> ProviderError:
    """What a read that got no answer within `timeout` raises (`fastread`'s, as hvac's would)."""
    mapped = translate(http.ReadTimeout(), login=False, what=what, host=host, timeout=timeout, secrets=secrets)
    assert mapped is not None
    return mapped
