"""Bidirectional formatting characters, refused in every name the service validates, and the
wider class of invisible format characters they belong to: the one definition of both, for
validation (`has_bidi_control`), caller text quoted in records (`smtpconfig.core.clip`, which escapes the
bidirectional ones) and third-party text shown to people (`smtpconfig.core.scrub`, which drops them all).

They are invisible and reorder the text that follows them on screen: a provider instance named
"vault\u202e" looks like "vault", and an identity holding U+202E (RIGHT-TO-LEFT OVERRIDE) can show
in a log line or an audit record as another name. Names here are identifiers, not prose, so none
of them is needed: the embeddings and overrides (U+202A-U+202E), the isolates (U+2066-U+2069) and
the invisible marks (U+200E LEFT-TO-RIGHT MARK, U+200F RIGHT-TO-LEFT MARK, U+061C ARABIC LETTER MARK).
"""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
RULE = "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)"


def has_bidi_control(text: str) -> bool:
    return not BIDI_CONTROLS.isdisjoint(text)


def is_format(character: str) -> bool:
    """Whether `character` is invisible formatting (Unicode category Cf): the `BIDI_CONTROLS`, and
    zero-width marks and joiners that can split a word without showing."""
    return unicodedata.category(character) == "Cf"
