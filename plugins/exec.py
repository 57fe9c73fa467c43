"""Secret provider ``exec``: runs a configured command, such as a PAM vendor's CLI, and reads the
secret from its standard output.

The command runs without a shell, in a session of its own, with stdin closed and a minimal
environment. On Linux it runs under a small reaper (plugins/exec_reaper.py), so nothing it starts
outlives it, not even a process that left the session with setsid: when the command exits or
times out, every process it started is killed. Elsewhere a timeout kills the process group only.
Exit status 0 means stdout holds the value; any other status is reported with its stderr, never
its stdout. Written only against the public plugin API, so it could move to its own distribution
unchanged.

Newline rule: with raw output and StripNewline true (the default), exactly one trailing ``\n`` or
``\r\n`` is removed from stdout and nothing else (``"a\n\n"`` gives ``"a\n"``, ``"a "`` stays
``"a "``, a lone ``\r`` stays). With json output the field's string is used exactly as decoded.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpconfig.plugin import (
    BadParameters,
    Parameter,
    ProviderError,
    ProviderUnavailable,
    Register,
    Resolved,
    Secret,
    SecretNotFound,
    SecretProvider,
    hookimpl,
    strip_newline,
)

#: Runs each command and ends whatever it started, setsid or not (see plugins/exec_reaper.py);
#: None where the kernel has no child subreapers (not Linux), and only the process group is ended.
REAPER: Path | None = Path(__file__).with_name("exec_reaper.py") if sys.platform == "linux" else None
#: Seconds the reaper gets to end a timed-out command's processes before the group is killed.
REAPER_GRACE = 2.0
#: Largest stdout accepted; more means the command is not printing one secret.
STDOUT_LIMIT = 1 << 20
#: The tail of stderr kept for error reports.
STDERR_KEEP = 4096
#: Variables passed through from the server's environment; everything else is left out.
INHERITED = ("PATH", "HOME", "LANG")
_RESERVED_PREFIX = "SMTPCONFIG_"
_MASK = "**********"


class ExecProvider(SecretProvider):
    name = "exec"
    display_name = "Command"
    description = (
        "Runs a configured command (no shell) and reads the secret from its standard output. "
        "The instance parameters reach the command as SMTPCONFIG_PARAM_<NAME> environment variables "
        "(and SMTPCONFIG_SECRET_NAME), the Token as SMTPCONFIG_INIT_TOKEN; an argument that is "
        "exactly {Name} or {Field} is replaced by that parameter. Exit status 0 means success."
    )
    parameters = (
        Parameter(
            "Command",
            kind="command",
            description='The program and its arguments: a JSON array of strings, e.g. ["/usr/bin/vendor-cli", '
            '"get", "{Name}"], or a command line split like a POSIX shell would (never run by one). Made '
            "through the API, it must start with a command the server's exec_commands setting lists.",
        ),
        Parameter("WorkingDirectory", required=False, kind="path", description="Directory the command runs in."),
        Parameter(
            "Environment",
            required=False,
            kind="environment",
            description="Extra environment variables as a JSON object of strings; the command otherwise "
            "sees only PATH, HOME and LANG. Names starting with SMTPCONFIG_ are the provider's own.",
        ),
        Parameter(
            "Token",
            kind="secret",
            required=False,
            description="Credential passed to the command as the environment variable SMTPCONFIG_INIT_TOKEN.",
        ),
        Parameter("TtlSeconds", kind="seconds", required=False, default="300", minimum=0, maximum=86400,
                  description="Seconds a value may be cached."),
        Parameter(
            "TimeoutSeconds",
            kind="seconds",
            required=False,
            minimum=0.01,
            maximum=3600,
            description="Seconds the command may run; at most the provider instance's timeout, which is "
            "also the default.",
        ),
        Parameter(
            "OutputFormat",
            kind="choice",
            choices=("raw", "json"),
            required=False,
            default="raw",
            description="raw: stdout is the value; json: stdout is a JSON object and Field names the value.",
        ),
        Parameter(
            "StripNewline",
            kind="bool",
            required=False,
            default="true",
            description="With raw output, true removes exactly one trailing \\n or \\r\\n and nothing else.",
        ),
        Parameter("Name", instance_level=True, description="Which secret the command should print."),
        Parameter(
            "Field",
            instance_level=True,
            required=False,
            description="With OutputFormat json: the key of the value in the printed JSON object.",
        ),
    )
    default_ttl = 300.0

    @classmethod
    def check_initialization(cls, initialization: Mapping[str, Any]) -> None:
        environment = initialization.get("Environment")
        if isinstance(environment, Mapping):
            own = sorted(key for key in environment if key.upper().startswith(_RESERVED_PREFIX))
            if own:
                raise BadParameters(f"Environment sets {', '.join(own)}, which the provider sets itself",
                                    parameter="Environment")

    def resolve(
        self, instance_parameters: Mapping[str, Any], initialization: Mapping[str, Any]
    ) -> Resolved:
        # Typed and checked by the host (see the kinds in `parameters`).
        name = instance_parameters.get("Name", "")
        field = instance_parameters.get("Field", "")
        if not name:
            raise BadParameters("Name must name a secret", parameter="Name")
        output_format = initialization["OutputFormat"]
        if output_format == "json" and not field:
            raise BadParameters("Field is required when OutputFormat is json", parameter="Field")
        timeout = min(self.timeout, initialization.get("TimeoutSeconds", self.timeout))
        argv = _substitute(initialization["Command"], name=name, field=field)
        cwd = initialization.get("WorkingDirectory")
        if cwd is not None and not os.path.isdir(cwd):
            raise BadParameters(f"WorkingDirectory {cwd!r} is not a directory", parameter="WorkingDirectory")
        token = initialization.get("Token")
        token_text = token.reveal() if isinstance(token, Secret) else ""
        extra = initialization.get("Environment", {})
        env = self._environment(extra, instance_parameters, name, token_text)

        done = _run(argv, env, cwd, timeout)
        if done.status != 0:
            raise ProviderUnavailable(_failure(done, token_text))
        if not done.stdout:
            raise SecretNotFound(f"command printed nothing for secret {name!r}")
        # Decoded outside an except block: a UnicodeDecodeError holds the bytes it failed on, and it
        # must not ride along as the context of the error raised here.
        text = _utf8(done.stdout)
        if text is None:
            raise BadParameters("command output is not UTF-8 text", parameter="Command")
        if output_format == "json":
            value = _pick(text, field)
        else:
            value = strip_newline(text) if initialization["StripNewline"] else text
        if not value:
            raise SecretNotFound(f"command printed an empty value for secret {name!r}")
        return Resolved(Secret(value), ttl=initialization["TtlSeconds"])

    def _environment(
        self, extra: Mapping[str, str], instance_parameters: Mapping[str, Any], name: str, token: str,
    ) -> dict[str, str]:
        env = {key: os.environ[key] for key in INHERITED if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(extra)
        for parameter in self.parameters:
            value = instance_parameters.get(parameter.name) if parameter.instance_level else None
            if value is not None:
                env[f"{_RESERVED_PREFIX}PARAM_{parameter.name.upper()}"] = str(value)
        env[f"{_RESERVED_PREFIX}SECRET_NAME"] = name
        if token:
            env[f"{_RESERVED_PREFIX}INIT_TOKEN"] = token
        for key, value in env.items():
            if "\0" in value:
                raise BadParameters(f"the value for environment variable {key} contains a NUL character")
        return env


@hookimpl
def register_secret_providers(register: Register) -> None:
    register(ExecProvider)


# --- running the command ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    status: int
    #: Empty unless the command succeeded: a failing command's stdout is dropped unread.
    stdout: bytes
    #: The last `STDERR_KEEP` bytes.
    stderr: bytes


class _TimedOut(Exception):
    pass


class _TooMuchOutput(Exception):
    pass


def _run(argv: list[str], env: dict[str, str], cwd: str | None, timeout: float) -> _Done:
    report, report_end = os.pipe()
    try:
        process = subprocess.Popen(
            _reaped(argv, report_end), shell=False, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True, close_fds=True,
            pass_fds=(report_end,) if REAPER else (),
        )
    except OSError as error:
        os.close(report)
        raise _start_error(error, argv[0], cwd) from None
    except BaseException:
        os.close(report)
        raise
    finally:
        os.close(report_end)
    deadline = time.monotonic() + timeout
    try:
        stdout, stderr, problem = _collect(process, report, deadline)
        status = process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _end(process)
        raise ProviderUnavailable(f"command timed out after {timeout:g}s") from None
    except _TooMuchOutput:
        _end(process)
        raise BadParameters(f"command printed more than {STDOUT_LIMIT} bytes", parameter="Command") from None
    except BaseException:
        _end(process)
        raise
    finally:
        # Started with stdout=PIPE and stderr=PIPE, so neither is None (here and in `_collect`).
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
        os.close(report)
    if problem:
        raise _spawn_error(_reported(problem), argv[0], cwd)
    return _Done(status, bytes(stdout) if status == 0 else b"", bytes(stderr))


def _reaped(argv: list[str], report: int) -> list[str]:
    """The command line that runs `argv` under the reaper, where there is one."""
    if REAPER is None:
        return argv
    # -I -S: the command's environment (PYTHONPATH and the like) must not change the reaper.
    return [sys.executable, "-I", "-S", str(REAPER), str(report), *argv]


def _reported(problem: bytes | bytearray) -> OSError:
    """The reaper's account of a command it could not start, as the OSError it met."""
    try:
        doc = json.loads(problem)
        number = int(doc["errno"])
        return OSError(number, os.strerror(number), doc.get("filename"))
    except (ValueError, KeyError, TypeError):
        return OSError(0, "the command could not be started")


def _collect(process: subprocess.Popen, report: int, deadline: float) -> tuple[bytearray, bytearray, bytearray]:
    """Read stdout (bounded), the tail of stderr and the reaper's report until all reach end of
    file or time runs out."""
    stdout, stderr, problem = bytearray(), bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, stdout)  # type: ignore[arg-type]
        selector.register(process.stderr, selectors.EVENT_READ, stderr)  # type: ignore[arg-type]
        selector.register(report, selectors.EVENT_READ, problem)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, 0)
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer: bytearray = key.data
                buffer += chunk
                if buffer is stdout and len(stdout) > STDOUT_LIMIT:
                    raise _TooMuchOutput
                if buffer is not stdout and len(buffer) > STDERR_KEEP:
                    del buffer[:-STDERR_KEEP]
    return stdout, stderr, problem


def _end(process: subprocess.Popen) -> None:
    """End the command and everything it started."""
    if REAPER is not None:
        # The reaper kills what the command started, even what left the session, then exits.
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_unreaped(process.pid, REAPER_GRACE)
    # The reaper (or the command) leads its own session and is not reaped yet, so its pid still
    # names the group and cannot have been reused: whatever is left in the group goes now.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _wait_unreaped(pid: int, seconds: float) -> None:
    """Wait up to `seconds` for `pid` to exit, leaving it unreaped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.005)


def _start_error(error: OSError, program: str, cwd: str | None) -> ProviderError:
    """What Popen met. Under the reaper Popen starts the reaper's interpreter, not the command (whose
    own failure comes back through the report pipe): only WorkingDirectory is then the instance's."""
    if REAPER is None or (cwd is not None and error.filename == cwd):
        return _spawn_error(error, program, cwd)
    return ProviderUnavailable(f"the server cannot start its command runner: {error.strerror}")


def _spawn_error(error: OSError, program: str, cwd: str | None) -> BadParameters:
    if cwd is not None and error.filename == cwd:
        return BadParameters(f"cannot enter WorkingDirectory {cwd!r}: {error.strerror}", parameter="WorkingDirectory")
    if isinstance(error, FileNotFoundError):
        return BadParameters(f"command {program!r} not found", parameter="Command")
    if isinstance(error, PermissionError):
        return BadParameters(f"command {program!r} is not executable", parameter="Command")
    return BadParameters(f"command {program!r} cannot be run: {error.strerror}", parameter="Command")


def _failure(done: _Done, token: str) -> str:
    if done.status < 0:
        try:
            what = f"command was killed by signal {signal.Signals(-done.status).name}"
        except ValueError:
            what = f"command was killed by signal {-done.status}"
    else:
        what = f"command exited with status {done.status}"
    detail = _one_line(done.stderr.decode("utf-8", errors="replace"), token)
    return f"{what}: {detail}" if detail else what


def _one_line(text: str, token: str) -> str:
    """Stderr as one line: control characters become spaces, runs of blanks one, the token masked."""
    if token:
        text = text.replace(token, _MASK)
    text = "".join(" " if (ch.isspace() or not ch.isprintable()) else ch for ch in text)
    text = " ".join(text.split()).lstrip("\ufffd")  # the kept tail may start inside a character
    return text.replace(token, _MASK) if token else text


# --- output -------------------------------------------------------------------------------------

_INVALID = object()


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:  # JSONDecodeError keeps the whole document: never let it escape
        return _INVALID


def _pick(text: str, field: str) -> str:
    document = _json(text)
    if document is _INVALID:
        raise BadParameters("command output is not valid JSON", parameter="OutputFormat")
    if not isinstance(document, dict):
        raise SecretNotFound("command output is not a JSON object")
    if field not in document:
        raise SecretNotFound(f"field {field!r} is not in the command's JSON output")
    value = document[field]
    if not isinstance(value, str):
        raise SecretNotFound(f"field {field!r} in the command's JSON output is not a string")
    return value


# --- parameters ---------------------------------------------------------------------------------


def _substitute(argv: tuple[str, ...], *, name: str, field: str) -> list[str]:
    """Replace arguments that are exactly ``{Name}`` or ``{Field}``; nothing else is expanded."""
    out = [argv[0]]
    for arg in argv[1:]:
        if arg == "{Name}":
            # As an argument, a leading "-" would be read as an option of the command.
            if name.startswith("-"):
                raise BadParameters("Name cannot start with '-' where Command passes it as an argument", parameter="Name")
            arg = name
        elif arg == "{Field}":
            if not field or field.startswith("-"):
                raise BadParameters("Command passes {Field}: Field must be given and not start with '-'", parameter="Field")
            arg = field
        if "\0" in arg:
            raise BadParameters("a parameter contains a NUL character")
        out.append(arg)
    return out
