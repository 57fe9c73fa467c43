"""gRPC's own log lines: its C core writes them straight to standard error, not through Python's
logging, so neither the log level nor the log format reaches them.

- **Level.** Errors only, unless the operator set `GRPC_VERBOSITY` (``INFO`` shows each failed TLS
  handshake, which helps when a client cannot connect). The C core reads the variable when grpc is
  first imported, so `smtpconfig.cli.main` imports this module before anything imports grpc.
- **Format.** With ``log_format = "json"``, `wrap_stderr_as_json` puts a pipe on file descriptor 2.
  A reader thread passes every line that is a JSON object through and wraps every other line
  (gRPC's, a Python warning, a traceback) in one, so the stream holds JSON lines only. At exit
  the pipe is closed and read to its end before the process ends, so no line is lost.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time

from smtpconfig.ops.logs import redact

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# `I1206 13:06:30.472562   13565 ssl_transport_security.cc:2563] Handshake failed ...`
_CORE_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+(\S+:\d+)\]\s?(.*)$")
_LEVELS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
_DRAIN_SECONDS = 5.0


def wrap_stderr_as_json() -> None:
    """From now until the process exits, every line written to file descriptor 2 (by Python, the
    C core or a library) reaches the real standard error as a JSON object."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_copy, args=(read_end, real), name="stderr-json", daemon=True)
    reader.start()
    atexit.register(_drain, real, reader)


def _drain(real: int, reader: threading.Thread) -> None:
    """Close the pipe (fd 2 was its only write end) and wait for the reader to reach its end."""
    sys.stderr.flush()
    os.dup2(real, 2)
    reader.join(_DRAIN_SECONDS)  # a child process that kept fd 2 open would hold it forever


def _copy(read_end: int, real: int) -> None:
    with os.fdopen(read_end, "rb") as pipe, os.fdopen(real, "wb", buffering=0, closefd=False) as out:
        for raw in pipe:
            line = as_json_line(raw.decode("utf-8", "replace"))
            if line is not None:
                out.write(line.encode() + b"\n")


def as_json_line(text: str) -> str | None:
    """`text` if it is a JSON object already, else a JSON object that holds it (redacted, as
    every log line is); None for an empty line."""
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text
        except ValueError:
            pass
    core = _CORE_LINE.match(text)
    now = time.time()
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "level": _LEVELS[core.group(1)] if core else "WARNING",
        "logger": "grpc" if core else "stderr",
        "message": redact(f"{core.group(2)}: {core.group(3)}" if core else text),
    }
    return json.dumps(line)
