"""Logging setup: text or JSON lines on stderr, the call in progress on every line, and redaction.

`CALL` holds the call in progress (any object with `request_id`, `method` and `identity`); the
servicer layer sets it, and every line logged while it is set carries those fields.

`Redactor` is a backstop, not the defence: code keeps values out of messages by using `Secret`.
It masks what slips through anyway, in the final message and in tracebacks: bearer tokens and
authorization header values, ``key=value`` and ``"key": "value"`` pairs whose key names a password,
secret, token or API key, PEM private key blocks, passwords in URLs, and every value handed to
`remember_secret` (the resolver hands it each value it fetches).

It masks values, not names. A key whose last part says it holds something *about* a secret
(``SMTPCONFIG_SECRET_NAME``, ``token_endpoint``, ``password_file``) keeps its value, as do ``PWD``
and ``OLDPWD`` (directories), and the source lines a traceback quotes keep their code
(``password = settings.password`` holds no value; a remembered value in one is still masked).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, TextIO

#: The call in progress: an object with `request_id`, `method` and `identity` attributes, or None.
CALL: ContextVar[Any] = ContextVar("smtpconfig_call", default=None)

MASK = "[REDACTED]"
#: Values kept by `remember_secret` (the most recent ones); shorter values are ignored, as masking
#: them would garble ordinary words.
REMEMBERED_MAX = 1024
REMEMBERED_MIN_LENGTH = 6

_CALL_FIELDS = ("request_id", "method", "identity")


def call_fields() -> dict[str, str]:
    """`request_id`, `method` and `identity` of the call in progress (those that are set)."""
    call = CALL.get()
    if call is None:
        return {}
    fields = {}
    for name in _CALL_FIELDS:
        value = getattr(call, name, None)
        if value is not None and value != "":
            fields[name] = str(value)
    return fields


# --- redaction -----------------------------------------------------------------------------------

# A key is secret-named when it holds one of these words (as a part, or inside one part)...
_KEY = r"[\w.-]*(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|apikey|SMTPCONFIG_KEY)[\w.-]*"
_QUOTED = r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""  # escaped quotes included
# Quoted, bare, or an opening quote that never closes (a cut-off message): masked to the line end.
_VALUE = rf"""({_QUOTED}|[^\s,;&}}\])"']+|["'][^\r\n]*)"""
# ...unless its last part says it holds something about a secret, not the secret: which one
# (SMTPCONFIG_SECRET_NAME), where (token_endpoint, password_file), or what kind (token_type).
_DESCRIBING = frozenset({"name", "names", "endpoint", "url", "uri", "path", "file", "type", "ttl", "expiry"})
# The shell's working directories, not passwords (`pwd` in any other key still is one).
_WORKING_DIRECTORIES = frozenset({"PWD", "OLDPWD"})
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def secret_named(key: str) -> bool:
    """Whether a `key=value` pair's key says its value is a secret."""
    if key in _WORKING_DIRECTORIES:
        return False
    if key.strip("\"'").upper() == "SMTPCONFIG_KEY":  # the key that seals every value at rest
        return True
    words = [w.lower() for w in _WORD.findall(key)]
    if not words or words[-1] in _DESCRIBING:
        return False
    joined = "".join(words)
    return "pwd" in words or any(part in joined for part in ("passwd", "password", "passphrase", "secret", "token", "apikey"))


def _masking(pattern: re.Pattern, exempt: frozenset[str] = frozenset()):
    """A replacement for `pattern` (groups: key, separator, value) that masks the value of a
    secret-named key; any other pair keeps its value, which is searched again for pairs."""
    def replace(match: re.Match) -> str:
        key, separator, value = match.group("key", "sep", "value")
        if key in exempt or not secret_named(key):
            return key + separator + pattern.sub(replace, value)
        quote = value[0] if value[0] in "\"'" else ""
        return f"{key}{separator}{quote}{MASK}{quote}"
    return replace


def _by_name(pattern: str, exempt: frozenset[str] = frozenset()) -> tuple[re.Pattern, Any]:
    compiled = re.compile(pattern, re.I)
    return compiled, _masking(compiled, exempt)


# Masked by their shape, wherever they are.
_BY_SHAPE = (
    # Unterminated blocks (a truncated message) are masked to the end.
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)", re.S), MASK),
    # Tokens are long; "bearer token" in prose is not one.
    (re.compile(r"(\bBearer\s+)[\w.~+/-]{16,}=*", re.I), r"\1" + MASK),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1" + MASK + "@"),
)
# Masked by the name they are given: not in the source lines a traceback quotes, where
# `password = settings.password` names a value and holds none.
_BY_NAME = (
    (re.compile(r"""(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+""", re.I), r"\1" + MASK),
    # key=value always; with a colon only when the key or the value is quoted, so prose such as
    # "token: the endpoint refused" keeps its words.
    # `Secret=` exactly is a secret reference's Keyfactor parameter: a path, which operators need.
    _by_name(rf"""\b(?P<key>{_KEY})(?P<sep>["']?\s*=\s*)(?P<value>{_VALUE})""", frozenset({"Secret"})),
    _by_name(rf"""(?P<key>["']{_KEY}["'])(?P<sep>\s*:\s*)(?P<value>{_VALUE})"""),
    _by_name(rf"""\b(?P<key>{_KEY})(?P<sep>\s*:\s*)(?P<value>{_QUOTED})"""),
)
# The line after this one in a formatted traceback is a line of source code.
_FRAME = re.compile(r'^  File "[^"\n]*", line \d+, in ')

_remembered: OrderedDict[str, None] = OrderedDict()
_remembered_lock = threading.Lock()
_longest_first: tuple[str, ...] | None = ()  # None: to be sorted again before the next redaction


def remember_secret(value: str) -> None:
    """Mask `value` wherever it appears in a log line from now on (the most recent
    `REMEMBERED_MAX` values of at least `REMEMBERED_MIN_LENGTH` characters are kept)."""
    global _longest_first
    if len(value) < REMEMBERED_MIN_LENGTH:
        return
    with _remembered_lock:
        if value in _remembered:
            _remembered.move_to_end(value)
            return
        _remembered[value] = None
        while len(_remembered) > REMEMBERED_MAX:
            _remembered.popitem(last=False)
        # Sorted when a line is next redacted, not here: a cold resolution of a new value (one per
        # call when many distinct secrets are read) would pay for sorting every remembered one.
        _longest_first = None


def forget_secrets() -> None:
    """Drop every remembered value (tests)."""
    global _longest_first
    with _remembered_lock:
        _remembered.clear()
        _longest_first = ()


def _longest_values() -> tuple[str, ...]:
    """The remembered values, longest first: a value containing another is masked whole before
    the shorter one can split it."""
    global _longest_first
    values = _longest_first
    if values is None:
        with _remembered_lock:
            values = _longest_first
            if values is None:
                values = _longest_first = tuple(sorted(_remembered, key=len, reverse=True))
    return values


def redact(text: str, *, traceback: bool = False) -> str:
    """`text` with remembered values and secret-looking parts replaced by ``[REDACTED]``. With
    `traceback`, the source lines it quotes keep their names (values found in them are masked)."""
    # Exact values first: a pattern could mask part of one and leave the rest unmatched.
    for value in _longest_values():
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _BY_SHAPE:
        text = pattern.sub(replacement, text)
    if not traceback:
        return _redact_names(text)
    return "".join(line if is_source else _redact_names(line) for is_source, line in _source_or_not(text))


def _redact_names(text: str) -> str:
    for pattern, replacement in _BY_NAME:
        text = pattern.sub(replacement, text)
    return text


def _source_or_not(text: str) -> list[tuple[bool, str]]:
    """`text` in runs of lines, each marked whether it is a source line quoted by a traceback."""
    runs: list[tuple[bool, str]] = []
    after_frame = False
    for line in text.splitlines(keepends=True):
        if after_frame or not runs or runs[-1][0]:
            runs.append((after_frame, line))
        else:
            runs[-1] = (False, runs[-1][1] + line)
        after_frame = bool(_FRAME.match(line))
    return runs


_EXCEPTION_FORMATTER = logging.Formatter()


class Redactor(logging.Filter):
    """Rewrites each record's final message (and traceback) through `redact`; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not fail the caller's log call
            message = f"{record.msg} [arguments dropped: they do not match the format]"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, traceback=True)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, traceback=True)
        return True


# --- formatting ----------------------------------------------------------------------------------


def _rfc3339(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [<request_id>] <message>`` and the traceback, if any.

    A record that spans lines (a traceback, or a library's message with line breaks in it) has
    every line after its first indented by two spaces: only a record's first line starts at the
    left margin, so no text inside a record, whoever wrote it, can pass for a record of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _rfc3339(record)

    def format(self, record: logging.LogRecord) -> str:
        request_id = call_fields().get("request_id")
        record.request_tag = f" [{request_id}]" if request_id else ""
        text = super().format(record)
        if "\n" in text or "\r" in text:
            text = _CONTINUED.join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        return text


# What separates the lines of one record in text logs (see TextFormatter).
_CONTINUED = "\n  "


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the call's fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": _rfc3339(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(call_fields())
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc_info"] = record.exc_text or redact(self.formatException(record.exc_info), traceback=True)
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return json.dumps(line)


_handler: logging.Handler | None = None


def configure(level: str, fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or `stream`) at `level` (``debug``, ``info``, ...) as `fmt` (``text`` or
    ``json``), through a `Redactor`. Calling it again replaces the handler it installed; other
    handlers are left alone."""
    global _handler
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    formatters = {"text": TextFormatter, "json": JsonFormatter}
    if fmt not in formatters:
        raise ValueError(f"unknown log format {fmt!r}; use text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatters[fmt]())
    handler.addFilter(Redactor())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(number)
    _handler = handler
    return handler
