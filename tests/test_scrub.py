"""`smtpconfig.core.scrub`: third-party text cleaned of every form of the credentials in play, made one
line and capped. Table-driven: each case says which echo it stands for."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

from smtpconfig.core.scrub import CUT, MASK, MAX_TEXT, Scrubber, plain
from smtpconfig.core.secret import Secret

USER = "relay-user"
PASSWORD = "PLANTED/smtp+password=9f3c"  # '/', '+' and '=' differ in base64, URL and form encodings
TOKEN = "PLANTED-access-token-61e0aa"
SENDER = "relay@example.com"
CLIENT_ID = "smtp-client"
CLIENT_SECRET = "PLANTED client&secret/5d21"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_PAYLOAD = b64(f"\0{USER}\0{PASSWORD}")
XOAUTH2_PAYLOAD = b64(f"user={SENDER}\x01auth=Bearer {TOKEN}\x01\x01")
BASIC_HEADER = b64(f"{CLIENT_ID}:{CLIENT_SECRET}")
BASIC_RFC6749 = b64(f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}")


def scrubber() -> Scrubber:
    return (
        Scrubber()
        .smtp_login(Secret(USER), Secret(PASSWORD))
        .xoauth2(SENDER, Secret(TOKEN))
        .client_credentials(Secret(CLIENT_ID), Secret(CLIENT_SECRET))
    )


def forms_of(value: str) -> list[str]:
    """What a careless echo could show of `value`: every form checked for after cleaning."""
    return [value, value.upper(), value.lower(), b64(value), quote(value, safe=""), quote_plus(value)]


ECHOES = [
    (f"535 5.7.8 {PASSWORD} rejected", "the password as it is"),
    (f"535 5.7.8 {PASSWORD.upper()}", "upper-cased"),
    (f"535 5.7.8 {PASSWORD.lower()}", "lower-cased"),
    (f"535 5.7.8 {PLAIN_PAYLOAD}", "AUTH PLAIN's payload echoed"),
    (f"535 5.7.8 {PLAIN_PAYLOAD.upper()}", "AUTH PLAIN's payload upper-cased"),
    (f"535 5.7.8 {PLAIN_PAYLOAD.lower()}", "AUTH PLAIN's payload lower-cased"),
    (f"535 5.7.8 {PLAIN_PAYLOAD[3:]}", "the payload from another alignment"),
    (f"535 5.7.8 {PLAIN_PAYLOAD[:-6]}", "the payload cut at the end: the start of the password"),
    (f"535 5.7.8 {PLAIN_PAYLOAD[:18]}", "the payload's first bytes: the user name"),
    (f"535 5.7.8 xyz{PLAIN_PAYLOAD}", "the payload glued to other base64-looking text"),
    (f"535 5.7.8 {b64('prefix ' + PASSWORD + ' suffix')}", "base64 of the password inside other text"),
    (f"334 {b64(USER)} 535 {b64(PASSWORD)}", "AUTH LOGIN's two payloads"),
    (f"535 5.7.8 {XOAUTH2_PAYLOAD}", "XOAUTH2's payload"),
    (f"535 5.7.8 {XOAUTH2_PAYLOAD.upper()}", "XOAUTH2's payload upper-cased"),
    (f"535 5.7.8 token {TOKEN} expired", "the bearer token"),
    (f"invalid_client: {quote_plus(CLIENT_SECRET)}", "the client secret as the form body sent it"),
    (f"invalid_client: {quote(CLIENT_SECRET, safe='')}", "the client secret percent-encoded"),
    (f"invalid_client: {quote(CLIENT_SECRET, safe='').lower()}", "percent-encoding in lower-case hex"),
    (f"invalid_client: Basic {BASIC_HEADER}", "HTTP Basic as Authlib sends it"),
    (f"invalid_client: Basic {BASIC_RFC6749}", "HTTP Basic form-encoded first (RFC 6749)"),
    (f"invalid_client: client_id={CLIENT_ID}&client_secret={quote_plus(CLIENT_SECRET)}", "the whole form body"),
    ("PLANTED\u200b/smtp+password=9f3c", "a zero-width space inside the value"),
    (f"\u202e{PASSWORD}\u202c", "wrapped in a right-to-left override"),
]


@pytest.mark.parametrize(("text", "why"), ECHOES, ids=[why for _, why in ECHOES])
def test_every_form_of_a_credential_is_masked(text: str, why: str) -> None:
    cleaned = scrubber().clean(text)
    assert MASK in cleaned, why
    for value in (USER, PASSWORD, TOKEN, CLIENT_SECRET):
        for form in forms_of(value):
            assert form.lower() not in cleaned.lower(), (why, form)
    for payload in (PLAIN_PAYLOAD, XOAUTH2_PAYLOAD, BASIC_HEADER, BASIC_RFC6749):
        assert payload[4:16].lower() not in cleaned.lower(), (why, "part of a payload survived")


KEPT = [
    ("535 5.7.8 Authentication credentials invalid", "ordinary reply text"),
    ("550 5.7.1 Client does not have permissions to send as this sender", "long words are not decoded into secrets"),
    ("535 5.7.139 Authentication unsuccessful, basic authentication is disabled", "enhanced status codes"),
    ("invalid_client: AADSTS7000215 Invalid client secret provided", "an IdP's code and text"),
]


@pytest.mark.parametrize(("text", "why"), KEPT, ids=[why for _, why in KEPT])
def test_text_without_credentials_is_kept_word_for_word(text: str, why: str) -> None:
    assert scrubber().clean(text) == text, why


SHORT = [
    ("ab", "about ab, lab; ab", f"about {MASK}, lab; {MASK}", "a 2-character value only as a whole word"),
    ("ab", "YWI= and YWIx", f"{MASK}= and YWIx", "its base64 only as a whole word"),
    ("x", "syntax error x", f"syntax error {MASK}", "one character"),
    ("9fc", "9fc9 9FC", f"9fc9 {MASK}", "any case, whole words"),
]


@pytest.mark.parametrize(("value", "text", "expected", "why"), SHORT, ids=[c[3] for c in SHORT])
def test_short_values_are_masked_only_where_they_stand_alone(value: str, text: str, expected: str, why: str) -> None:
    assert Scrubber(value).clean(text) == expected, why


def test_a_payload_holding_a_short_value_is_still_masked() -> None:
    payload = b64(f"\0{USER}\0ab")
    assert Scrubber().smtp_login(USER, "ab").clean(f"535 {payload}") == f"535 {MASK}"


LINES = [
    ("535 nope\r\n2026-12-06T12:00:00.000Z INFO forged line", "535 nope 2026-12-06T12:00:00.000Z INFO forged line", "CR LF"),
    ("a\nb\rc\x00d\x1b[31me\x7ff", "a b c d [31me f", "controls, NUL, escape, DEL"),
    ("a\u2028b\u2029c\u0085d", "a b c d", "Unicode line and paragraph separators, NEL"),
    ("  lots \t\t of   blanks  ", "lots of blanks", "blanks collapsed and trimmed"),
    ("abc\u202edcba\u2066x\u2069\u200f", "abcdcbax", "bidirectional controls dropped"),
]


@pytest.mark.parametrize(("text", "expected", "why"), LINES, ids=[c[2] for c in LINES])
def test_text_becomes_one_line(text: str, expected: str, why: str) -> None:
    assert plain(text) == expected, why
    assert scrubber().clean(text) == expected, why


def test_long_text_is_capped_and_marked_as_cut() -> None:
    cleaned = plain("x" * 10_000)
    assert len(cleaned) == MAX_TEXT and cleaned.endswith(CUT)
    assert plain("y" * MAX_TEXT) == "y" * MAX_TEXT  # at the limit: nothing cut, no marker


def test_masking_happens_before_the_cap_so_no_piece_of_a_value_survives() -> None:
    # The password straddles the cap: cutting first would keep its first half.
    text = "z" * (MAX_TEXT - 10) + PASSWORD + "z" * 100
    cleaned = scrubber().clean(text)
    assert len(cleaned) <= MAX_TEXT and cleaned.endswith(CUT)
    assert PASSWORD[:6] not in cleaned


def test_bytes_are_read_as_utf8() -> None:
    assert scrubber().clean(f"535 {PASSWORD}\n".encode()) == f"535 {MASK}"
    assert plain(b"bad \xff byte") == "bad \ufffd byte"


def test_without_credentials_only_the_shape_changes() -> None:
    text = b64("\0someone\0something")
    assert plain(f"535 {text}\n") == f"535 {text}"
