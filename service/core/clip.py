"""Text that came from a caller, made fit to store and to show: one line, and short.

Callers choose the names, paths and addresses that audit records and error details quote. Quoted
whole, a megabyte field makes a megabyte record (the audit trail then fills the disk) or a status
trailer larger than any client accepts; a CR or LF in it forges a line in `smtpconfig audit`.
So every such text is cut to a limit, with a mark saying it was cut and how long it was, and its
control characters (C0, C1, the Unicode line and paragraph separators, the bidirectional controls
of `smtpconfig.core.bidi` that reorder what a terminal shows) are written as escapes.

Escaped, not dropped: this text is the caller's, kept as evidence, so a record must show what was
sent. Text from a third party shown to people (`smtpconfig.core.scrub`) is collapsed instead: there, what
matters is that it reads as one line and hides no credential.
"""

from __future__ import annotations

import re

from smtpconfig.core.bidi import BIDI_CONTROLS

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + re.escape("".join(sorted(BIDI_CONTROLS))) + "]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str, limit: int) -> str:
    """`text` on one line, of at most `limit` characters plus a mark when it had to be cut."""
    if len(text) <= limit and not _UNSAFE.search(text):
        return text  # the common case: a short, plain name
    shown = _UNSAFE.sub(_escape, text[:limit])
    if len(shown) <= limit and len(text) <= limit:
        return shown
    return f"{shown[:limit]}…[cut, {len(text)} chars]"
