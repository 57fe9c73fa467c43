"""What each kind of provider parameter accepts, and the typed value a provider receives.

The host reads every value through `parse` when an instance or a profile is written (a problem is
INVALID_ARGUMENT naming the field) and again before a provider is called, so a provider works
with checked, typed values and never re-parses text. Problems are phrased to follow the field's
name: ``"Initialization.TtlSeconds must be a number of seconds ..."``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from smtpconfig.core.secret import Secret

ParameterKind = Literal[
    "string", "secret", "bool", "int", "seconds", "choice", "url", "path", "command", "environment"
]
KINDS: tuple[str, ...] = (
    "string", "secret", "bool", "int", "seconds", "choice", "url", "path", "command", "environment",
)
#: Kinds the host guards on this host's behalf (see smtpconfig.domain.host_access): only
#: initialization parameters, which the operator's API callers set, can have them.
GUARDED: frozenset[str] = frozenset({"url", "path", "command", "environment"})
#: Kinds whose values say where or through what a secret goes: changing one unbinds the instance's
#: stored secret values (see `Parameter.binds_secrets`).
BINDING: frozenset[str] = frozenset({"url", "command", "environment"})

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DURATION = re.compile(r"(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(ms|s|m|h|d)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_VARIABLE = re.compile(r"[^=\0]+")


def parse(
    kind: str, text: str | Secret, *, minimum: float | None = None, maximum: float | None = None,
    choices: tuple[str, ...] = (), schemes: tuple[str, ...] = (),
) -> object:
    """The typed value `text` states for a parameter of `kind`, or ValueError saying what it must be.

    Types: string, path, choice and url give `str` (a choice in its declared spelling, a url with
    its scheme), secret `Secret`, bool `bool`, int `int`, seconds `float`, command a tuple of
    arguments, environment a read-only mapping of variable names to values.
    """
    if kind == "secret":
        return text if isinstance(text, Secret) else Secret(text)
    if isinstance(text, Secret):
        text = text.reveal()  # only a plugin's own mistake: the host types secrets by kind
    if kind == "string":
        return text
    if kind == "path":
        return _path(text)
    if kind == "command":
        return command_argv(text)
    if kind == "environment":
        return _environment(text)
    word = text.strip()
    if kind == "bool":
        return _bool(word)
    if kind == "int":
        return _bounded(_int(word), minimum, maximum, "a whole number")
    if kind == "seconds":
        # A span of time is never negative, whatever the parameter declares.
        low = 0.0 if minimum is None else max(minimum, 0.0)
        return _bounded(_seconds(word), low, maximum, "a number of seconds")
    if kind == "choice":
        return _choice(word, choices)
    if kind == "url":
        return _url(word, schemes)
    raise ValueError(f"has unknown kind {kind!r}")


def _bool(word: str) -> bool:
    lowered = word.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


def _int(word: str) -> int:
    # ASCII digits only: int() would take "1_000" and other scripts' digits.
    if not _WHOLE.fullmatch(word):
        raise ValueError("must be a whole number")
    return int(word)


def _seconds(word: str) -> float:
    match = _DURATION.fullmatch(word.lower())
    if match is None:
        raise ValueError("must be a number of seconds, e.g. 30, 2.5, 90s, 5m or 1h")
    return float(match.group(1)) * _UNIT[match.group(2)]


def _bounded(number: float, minimum: float | None, maximum: float | None, what: str) -> float:
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"must be {what} {bounds_text(minimum, maximum)}")
    return number


def bounds_text(minimum: float | None, maximum: float | None) -> str:
    """``"from 1 to 10"``, ``"of at least 1"``, ``"of at most 10"`` or ``""``."""
    low, high = number_text(minimum), number_text(maximum)
    if minimum is not None and maximum is not None:
        return f"from {low} to {high}"
    if minimum is not None:
        return f"of at least {low}"
    if maximum is not None:
        return f"of at most {high}"
    return ""


def number_text(number: float | None) -> str:
    """A bound as people write it: ``16777216``, ``0.01``; ``""`` for None."""
    if number is None:
        return ""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _choice(word: str, choices: tuple[str, ...]) -> str:
    lowered = word.lower()
    for choice in choices:
        if choice.lower() == lowered:
            return choice
    raise ValueError(f"must be one of {', '.join(choices)}")


def _url(word: str, schemes: tuple[str, ...]) -> str:
    example = f"{schemes[0]}://host:port"
    url = word if "://" in word else f"{schemes[0]}://{word}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading the port is the check
    except ValueError:
        raise ValueError(f"must be a URL like {example}, with a valid port") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}, like {example}")
    if not parts.hostname:
        raise ValueError(f"must be a URL like {example}")
    if parts.username is not None or parts.password is not None:
        # The value is stored and shown in clear: a password in it would be readable by all.
        raise ValueError("must not hold a user name or password; use the provider's secret parameters")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ValueError(f"must be a URL like {example}, without query, fragment or spaces")
    return url


def _path(text: str) -> str:
    if text != text.strip():
        # A provider that strips would open another path than the one checked ("/ok/.. ").
        raise ValueError("must not start or end with white space")
    if not os.path.isabs(text):
        raise ValueError("must be an absolute path")
    return text


def command_argv(value: str) -> tuple[str, ...]:
    """The argument vector a command value states: a JSON array of strings when it starts with
    ``[``, otherwise a command line split as a POSIX shell would (and never run by one)."""
    raw = value.strip()
    argv: object
    if raw.startswith("["):
        try:
            argv = json.loads(raw)
        except (ValueError, RecursionError):  # a decode error repeats the document: never let it escape
            argv = None
        if not (isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)):
            raise ValueError("must be a JSON array of strings")
    else:
        try:
            argv = shlex.split(raw)
        except ValueError:
            raise ValueError("is not a valid command line (unbalanced quotes?)") from None
    if not argv or not argv[0]:
        raise ValueError("must name a program")
    if any("\0" in arg for arg in argv):
        raise ValueError("contains a NUL character")
    return tuple(argv)


def _environment(text: str) -> Mapping[str, str]:
    try:
        variables = json.loads(text)
    except (ValueError, RecursionError):
        variables = None
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ValueError("must be a JSON object of strings")
    if not all(_is_utf8(item) for pair in variables.items() for item in pair):
        # JSON's \ud800 escapes decode to lone surrogates, which no environment can hold.
        raise ValueError("must hold text only: a \\uD800-\\uDFFF escape that is not part of a pair is not a character")
    bad = sorted(name for name in variables if not _VARIABLE.fullmatch(name))
    if bad or any("\0" in value for value in variables.values()):
        raise ValueError("must name variables without '=' or NUL, and give values without NUL")
    return MappingProxyType(variables)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
