"""The shapes of identities: a plain name (tokens, the Unix socket) never passes for a
certificate's name, nor the reverse."""

from __future__ import annotations

import pytest

from smtpconfig.core.permissions import is_certificate_identity, is_plain_identity, is_uri_identity

NAMES = [
    # name, plain, certificate, URI, reason
    ("billing-app", True, False, False, "letters, digits and dashes"),
    ("ops.team@example_1", True, False, False, "the other punctuation a plain name may hold"),
    ("a" * 128, True, False, False, "128 characters, the longest plain name"),
    ("a" * 129, False, False, False, "one character too many"),
    ("-app", False, False, False, "a plain name starts with a letter or digit"),
    ("has space", False, False, False, "no spaces anywhere"),
    ("app\u202e", False, False, False, "a bidirectional control is no name character"),
    ("dns:monitor.example.org", False, True, False, "a certificate's DNS SAN"),
    ("cn:Ops Console", False, False, False, "no spaces in a CN identity either"),
    ("cn:ops", False, True, False, "a certificate's subject CN"),
    ("spiffe://example.org/ns/ops/sa/console", False, True, True, "a URI SAN, verbatim"),
    ("dns:", False, False, False, "a prefix without a name"),
    ("Spiffe://x", False, False, False, "a scheme is lower case, as the URI SAN check wants it"),
]


@pytest.mark.parametrize("name,plain,certificate,uri,reason", NAMES, ids=[n[4] for n in NAMES])
def test_identity_shapes(name: str, plain: bool, certificate: bool, uri: bool, reason: str) -> None:
    assert (is_plain_identity(name), is_certificate_identity(name), is_uri_identity(name)) == (plain, certificate, uri)
