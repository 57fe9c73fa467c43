"""`Secret`: a string that never shows its value unless asked for it by name."""

from __future__ import annotations

import hmac
from typing import NoReturn

_MASK = "**********"


def strip_line_ending(text: str) -> str:
    """`text` without one trailing LF or CRLF: what editors and `echo` add to a file holding a
    value, and never part of the value."""
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


class Secret:
    """A secret value that prints as ``**********`` in repr, str, format, logs and exceptions.

    Compare two secrets with ``==`` (constant time). Call :meth:`reveal` only where the value goes
    on the wire or into a cipher.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the value itself. Every call site is a place where the secret leaves its wrapper."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    # Hashing would put a function of the value into dict internals; secrets are not keys.
    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled; pass it by reference or reveal it on purpose")
