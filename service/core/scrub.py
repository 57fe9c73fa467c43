"""Text from a third party made fit to show: what a relay, an identity provider, a secret backend
or a command sends back, before it reaches a reply, a log line or an audit record.

A `Scrubber` knows the credentials in play and the forms in which the service itself put them on
the wire (the builders: `smtp_login`, `xoauth2`, `client_credentials`). `clean(text)`:

1. drops format characters (`smtpconfig.core.bidi.is_format`: bidirectional controls, zero-width marks):
   they reorder what a reader sees, and one put inside a value would hide it from the matching
   below;
2. masks every base64-looking run that decodes, at any of the four alignments, to bytes holding a
   credential, or starting with the end of one or ending with the start of one: echoes of a
   payload cut at either end, or of a value inside something longer;
3. masks each credential, alone and inside the payloads the service built, as plain text,
   base64 and URL-encoded, in any letter case (an echo may be upper-cased; upper-cased base64
   still identifies the value);
4. turns control and separator characters into spaces and collapses blanks: one line, so a CR or
   LF in the text cannot forge a log line;
5. caps it at `MAX_TEXT` characters, ending in `CUT` when something was cut.

Masking comes before cutting, so a cap never leaves a recognisable piece of a value behind.

Collapsed, not escaped as `smtpconfig.core.clip` does with a caller's text in audit records: this text is
a third party's, shown to people, and need not survive byte for byte; a control turned into a
space cannot forge a line, and the cut mark needs no length since nobody compares it to a request.

Short values: a credential of fewer than `SHORT` characters would match inside ordinary words and
turn every message into asterisks, so it and its own encodings are masked only where they stand
alone (no letter or digit on either side), and the base64 run check ignores it. Payloads that hold
it are long, and are masked as usual.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

from smtpconfig.core.bidi import is_format
from smtpconfig.core.secret import Secret

MASK = "**********"
CUT = "…[cut]"
#: Longest text kept, `CUT` included.
MAX_TEXT = 300
#: Credentials shorter than this are masked only as whole words (see the module docstring).
SHORT = 4
# A decoded run ending with the start of a credential, or starting with its end, is masked when
# the overlap is at least this long (or the whole credential, if shorter).
_OVERLAP = 4

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}=*")
_URLSAFE = str.maketrans("-_", "+/")
_BLANKS = re.compile(r"\s+")


def _reveal(value: Secret | str) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def _base64(data: bytes) -> set[str]:
    """Standard and URL-safe base64 of `data`, without padding (a prefix of the padded form)."""
    plain = base64.b64encode(data).decode("ascii").rstrip("=")
    return {plain, plain.replace("+", "-").replace("/", "_")}


def _encodings(text: str) -> set[str]:
    """`text` as it can go on the wire: plain, base64 of its UTF-8 and Latin-1 bytes (Authlib
    encodes HTTP Basic as Latin-1), and URL-encoded as form bodies and Basic credentials do."""
    forms = {text, quote(text, safe=""), quote(text), quote_plus(text)}
    forms |= _base64(text.encode("utf-8"))
    try:
        forms |= _base64(text.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return forms


class Scrubber:
    """Cleans third-party text of the credentials it was told about; see the module docstring."""

    def __init__(self, *values: Secret | str) -> None:
        self._values: list[str] = []  # the credentials, for the base64 run check
        self._forms: dict[str, bool] = {}  # form -> masked only as a whole word
        self._pattern: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: Secret | str) -> Scrubber:
        """Mask these credentials (empty ones are ignored) in every encoding."""
        for value in map(_reveal, values):
            if not value or value in self._values:
                continue
            self._values.append(value)
            short = len(value) < SHORT
            for form in _encodings(value):
                self._forms[form] = self._forms.get(form, True) and short
            self._pattern = None
        return self

    def add_payload(self, payload: str) -> Scrubber:
        """Mask a payload the service built from credentials (added separately) in base64."""
        for form in _encodings(payload):
            self._forms[form] = False
        self._pattern = None
        return self

    def smtp_login(self, user: Secret | str, password: Secret | str) -> Scrubber:
        """AUTH PLAIN sends base64 of ``\\0user\\0password``; AUTH LOGIN each one in base64."""
        self.add(user, password)
        return self.add_payload(f"\0{_reveal(user)}\0{_reveal(password)}")

    def xoauth2(self, user: str, token: Secret | str) -> Scrubber:
        """AUTH XOAUTH2 sends base64 of ``user=<user>\\x01auth=Bearer <token>\\x01\\x01``."""
        self.add(token)
        return self.add_payload(f"user={user}\x01auth=Bearer {_reveal(token)}\x01\x01")

    def client_credentials(self, client_id: Secret | str, client_secret: Secret | str) -> Scrubber:
        """The token request: id and secret form-encoded in the body (client_secret_post), or in
        HTTP Basic as base64 of ``id:secret``, raw (Authlib) or form-encoded first (RFC 6749)."""
        client, secret = _reveal(client_id), _reveal(client_secret)
        self.add(client, secret)
        self.add_payload(f"{client}:{secret}")
        return self.add_payload(f"{quote_plus(client)}:{quote_plus(secret)}")

    def clean(self, text: object) -> str:
        """`text` without credentials, on one line, at most `MAX_TEXT` characters."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = "".join(c for c in str(text) if not is_format(c))
        if self._values:
            # Runs first: a value's own form matched inside a longer echo would leave the rest
            # of the run (the user name, say) undecodable.
            wanted = [v.lower().encode("utf-8") for v in self._values if len(v) >= SHORT]
            if wanted:
                text = _BASE64_RUN.sub(lambda run: _masked_run(run.group(0), wanted), text)
            text = self._matcher().sub(MASK, text)
        return cap(one_line(text))

    def _matcher(self) -> re.Pattern[str]:
        if self._pattern is None:
            # Longest first, so a payload is masked whole before a value inside it splits it; a
            # base64 form takes its padding along.
            alternatives = [
                rf"(?<![^\W_]){re.escape(form)}(?![^\W_])" if whole else rf"{re.escape(form)}={{0,2}}"
                for form, whole in sorted(self._forms.items(), key=lambda item: -len(item[0]))
            ]
            self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        return self._pattern


def _masked_run(run: str, wanted: list[bytes]) -> str:
    """`run` itself, or the mask when it stands for one of the `wanted` values (lower-cased)."""
    for decoded in _decodings(run):
        if any(_holds(decoded.lower(), value) for value in wanted):
            return MASK
    return run


def _decodings(run: str) -> Iterator[bytes]:
    """The bytes a base64 run stands for, read from each of the four possible alignments."""
    body = run.rstrip("=").translate(_URLSAFE)
    for start in range(4):
        chunk = body[start:]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        if chunk:
            try:
                yield base64.b64decode(chunk, validate=True)
            except binascii.Error:
                continue


def _holds(decoded: bytes, value: bytes) -> bool:
    if value in decoded:
        return True
    least = min(_OVERLAP, len(value))
    return any(decoded.endswith(value[:n]) or decoded.startswith(value[-n:]) for n in range(least, len(value)))


def one_line(text: str) -> str:
    """Control and separator characters as spaces, runs of blanks as one, no blanks at the ends."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    return _BLANKS.sub(" ", printable).strip()


def cap(text: str, limit: int = MAX_TEXT) -> str:
    """`text`, or its start ending in `CUT`, at most `limit` characters in all."""
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT)].rstrip() + CUT


def plain(text: object) -> str:
    """Third-party text when no credential is in play: one line, capped."""
    return Scrubber().clean(text)
