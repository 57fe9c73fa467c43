"""The `exec` provider against real commands: small scripts written to tmp_path and run for real."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import textwrap
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from smtpconfig.plugin import BadParameters, ProviderError, ProviderUnavailable, Resolved, Secret, SecretNotFound
from smtpconfig.plugin.testing import prepare_initialization, prepare_parameters
from smtpconfig.providers.exec import INHERITED, STDERR_KEEP, ExecProvider, register_secret_providers
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.support import ServerProcess, short_dir

PLANTED = "PLANTED-stdout-value-7f3a9c"


def py_script(tmp_path: Path, body: str, name: str = "cli") -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def sh_script(tmp_path: Path, body: str, name: str = "cli.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def resolve(command: str | list[str], *, name: str = "db", field: str | None = None, timeout: float = 10.0,
            provider: ExecProvider | None = None, **init: Any) -> Resolved:
    """Resolve as the host does: parameters read by their kinds, then the rules across them."""
    provider = provider or ExecProvider(timeout=timeout)
    params = prepare_parameters(ExecProvider, {"Name": name} if field is None else {"Name": name, "Field": field})
    text = {"Command": command if isinstance(command, str) else json.dumps(command), **init}
    initialization = prepare_initialization(ExecProvider, text)
    ExecProvider.check_initialization(initialization)
    return provider.resolve(params, initialization)


def value(resolved: Resolved) -> str:
    return resolved.value.reveal()


def everything_shown(error: BaseException, *, with_locals: bool = False) -> str:
    """The error's text, repr, args and its formatted traceback with chained exceptions; with
    `with_locals`, every frame's local variables too."""
    shown = traceback.TracebackException.from_exception(error, capture_locals=with_locals).format()
    return "".join(shown) + str(error) + repr(error) + repr(error.args)


# --- registration and parameters -----------------------------------------------------------------


def test_the_hook_registers_the_exec_type() -> None:
    registered: list[type] = []
    register_secret_providers(registered.append)
    assert registered == [ExecProvider] and ExecProvider.name == "exec"


@pytest.mark.parametrize(
    ("name", "instance_level", "required", "kind", "default"),
    [
        ("Command", False, True, "command", None),
        ("WorkingDirectory", False, False, "path", None),
        ("Environment", False, False, "environment", None),
        ("Token", False, False, "secret", None),
        ("TtlSeconds", False, False, "seconds", "300"),
        ("TimeoutSeconds", False, False, "seconds", None),
        ("OutputFormat", False, False, "choice", "raw"),
        ("StripNewline", False, False, "bool", "true"),
        ("Name", True, True, "string", None),
        ("Field", True, False, "string", None),
    ],
)
def test_parameter_table(name: str, instance_level: bool, required: bool, kind: str, default: str | None) -> None:
    by_name = {p.name: p for p in ExecProvider.parameters}
    parameter = by_name[name]
    assert (parameter.instance_level, parameter.required, parameter.kind, parameter.default) == (
        instance_level, required, kind, default)
    assert parameter.description


# --- success -------------------------------------------------------------------------------------


def test_raw_stdout_is_the_value_with_the_configured_ttl(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'print("s3cret-" + os.environ["SMTPCONFIG_SECRET_NAME"])')
    resolved = resolve([cli, "get"], TtlSeconds="42")
    assert value(resolved) == "s3cret-db"
    assert resolved.ttl == 42
    assert resolve([cli]).ttl == 300


@pytest.mark.parametrize(
    ("output", "strip", "expected", "reason"),
    [
        ("a\n", "true", "a", "one trailing LF is removed"),
        ("a\r\n", "true", "a", "one trailing CRLF is removed"),
        ("a\n\n", "true", "a\n", "only one newline is removed"),
        ("a\r\n\r\n", "true", "a\r\n", "only one CRLF is removed"),
        ("a", "true", "a", "no newline: unchanged"),
        ("a ", "true", "a ", "trailing space is part of the value"),
        ("a \n", "true", "a ", "space before the newline stays"),
        ("  a\tb\n", "true", "  a\tb", "leading and inner whitespace stay"),
        ("a\r", "true", "a\r", "a lone CR is not a newline"),
        ("a\n\r", "true", "a\n\r", "LF followed by CR is not a trailing newline"),
        ("a\n", "false", "a\n", "StripNewline false keeps the output exact"),
        ("a\r\n", "FALSE", "a\r\n", "the flag is case-insensitive"),
    ],
)
def test_newline_rule(tmp_path: Path, output: str, strip: str, expected: str, reason: str) -> None:
    cli = py_script(tmp_path, 'sys.stdout.buffer.write(os.environ["OUT"].encode())')
    got = resolve([cli], Environment=json.dumps({"OUT": output}), StripNewline=strip)
    assert value(got) == expected, reason


def test_stripnewline_defaults_to_true(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'sys.stdout.write("v\\n")')
    assert value(resolve([cli])) == "v"


def test_json_output_picks_the_field(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'print(json.dumps({"username": "u", "password": " p\\n", "n": 1}))')
    assert value(resolve([cli], field="password", OutputFormat="json")) == " p\n"  # the field exactly
    assert value(resolve([cli], field="username", OutputFormat="JSON")) == "u"


def test_name_and_field_are_substituted_only_where_an_argument_is_exactly_the_placeholder(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'print(json.dumps(sys.argv[1:]))')
    got = resolve([cli, "get", "{Name}", "--field", "{Field}", "x{Name}", "{name}", "{Name} "],
                  name="db/primary", field="password")
    assert json.loads(value(got)) == ["get", "db/primary", "--field", "password", "x{Name}", "{name}", "{Name} "]


def test_command_may_be_a_command_line_split_without_a_shell(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'print(json.dumps(sys.argv[1:]))', name="vendor cli")
    target = tmp_path / "created"
    command = f"{shlex.quote(cli)} get '{{Name}}' \"two words\" a;b '$HOME' `id` > {target}"
    got = json.loads(value(resolve(command)))
    assert got == ["get", "db", "two words", "a;b", "$HOME", "`id`", ">", str(target)]
    assert not target.exists()


@pytest.mark.parametrize(
    "name",
    [
        "$HOME",
        "a; touch {marker}",
        "`touch {marker}`",
        "$(touch {marker})",
        "x | tee {marker}",
        "* ? [a] ~ & \\ \" '",
    ],
)
def test_parameters_are_never_interpreted_by_a_shell(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    name = name.format(marker=marker)
    cli = py_script(tmp_path, 'print(json.dumps([sys.argv[1], os.environ["SMTPCONFIG_SECRET_NAME"], '
                              'os.environ["SMTPCONFIG_PARAM_NAME"]]))')
    got = json.loads(value(resolve([cli, "{Name}"], name=name)))
    assert got == [name, name, name]
    assert not marker.exists()


def test_environment_is_minimal_and_carries_parameters_and_token(tmp_path: Path) -> None:
    got = resolve(["/usr/bin/env", "-0"], name="db", field="password", Token=Secret("tok-123"),
                  Environment=json.dumps({"VENDOR_URL": "https://pam.example"}))
    env = dict(item.split("=", 1) for item in value(got).split("\0") if item)
    expected = {"PATH", *(k for k in INHERITED if k in os.environ), "VENDOR_URL", "SMTPCONFIG_SECRET_NAME",
                "SMTPCONFIG_PARAM_NAME", "SMTPCONFIG_PARAM_FIELD", "SMTPCONFIG_INIT_TOKEN"}
    assert set(env) == expected
    assert env["SMTPCONFIG_SECRET_NAME"] == env["SMTPCONFIG_PARAM_NAME"] == "db"
    assert env["SMTPCONFIG_PARAM_FIELD"] == "password"
    assert env["SMTPCONFIG_INIT_TOKEN"] == "tok-123"
    assert env["VENDOR_URL"] == "https://pam.example"


def test_absent_optional_parameters_are_not_exported(tmp_path: Path) -> None:
    env = value(resolve(["/usr/bin/env", "-0"]))
    assert "SMTPCONFIG_PARAM_FIELD" not in env and "SMTPCONFIG_INIT_TOKEN" not in env


def test_token_reaches_the_command_through_its_environment_never_its_argv(tmp_path: Path) -> None:
    token = "tok-never-in-argv-91b2"
    cli = py_script(tmp_path, """\
        args = open("/proc/self/cmdline", "rb").read().decode()
        open(os.environ["ARGV_FILE"], "w").write(json.dumps(sys.argv) + args)
        sys.stderr.write("argv: " + json.dumps(sys.argv) + "\\n")
        if os.environ.get("FAIL"):
            sys.stderr.write("bad token " + os.environ["SMTPCONFIG_INIT_TOKEN"] + "\\n")
            sys.exit(5)
        print(os.environ["SMTPCONFIG_INIT_TOKEN"])
    """)
    argv_file = tmp_path / "argv"
    got = resolve([cli, "get", "{Name}"], Token=Secret(token), Environment=json.dumps({"ARGV_FILE": str(argv_file)}))
    assert value(got) == token
    seen = argv_file.read_text()
    assert cli in seen and "get" in seen and token not in seen

    # A failing command shows its stderr (here its argv), with the token masked even if it echoes it.
    with pytest.raises(ProviderUnavailable) as caught:
        resolve([cli, "get", "{Name}"], Token=Secret(token),
                Environment=json.dumps({"ARGV_FILE": str(argv_file), "FAIL": "1"}))
    message = str(caught.value)
    assert "status 5" in message and '"get", "db"' in message and "bad token **********" in message
    assert token not in message and token not in argv_file.read_text()


def test_working_directory_is_honoured_and_relative_commands_run_from_it(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    py_script(work, "print(os.getcwd())", name="here")
    assert value(resolve(["./here"], WorkingDirectory=str(work))) == str(work)


# --- timeouts ------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a killed orphan may linger as a zombie


@pytest.mark.parametrize(
    ("provider_timeout", "configured", "expected"),
    [
        (1.0, None, "1s"),  # the instance's timeout is the default
        (10.0, "1", "1s"),  # TimeoutSeconds shortens it
        (1.0, "5", "1s"),  # TimeoutSeconds cannot lengthen it
    ],
)
def test_timeout_kills_the_whole_process_tree(
    tmp_path: Path, provider_timeout: float, configured: str | None, expected: str
) -> None:
    pids = tmp_path / "pids"
    # The background sleep keeps stdout open: without killing the group, reading would wait 30 s.
    cli = sh_script(tmp_path, f"""\
        sleep 30 &
        echo $$ $! > {pids}
        sleep 30
    """)
    init = {} if configured is None else {"TimeoutSeconds": configured}
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=f"command timed out after {expected}$"):
        resolve([cli], timeout=provider_timeout, **init)
    assert time.monotonic() - started < 2.5
    spawned = [int(pid) for pid in pids.read_text().split()]
    assert len(spawned) == 2
    deadline = time.monotonic() + 2
    while any(_alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(pid) for pid in spawned)


def _gone(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


@pytest.mark.parametrize("ends", ["times out", "exits"])
def test_a_grandchild_that_left_the_session_is_ended_too(tmp_path: Path, ends: str) -> None:
    pid_file = tmp_path / "grandchild"
    # setsid puts the grandchild in a session (and group) of its own, out of reach of the group kill;
    # its output goes elsewhere, so nothing waits on it: only the reaper can end it.
    cli = sh_script(tmp_path, f"""\
        setsid sh -c 'echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60' \
            </dev/null >/dev/null 2>&1 &
        while [ ! -s {pid_file} ]; do sleep 0.01; done
        echo value
        {"sleep 30" if ends == "times out" else "exit 0"}
    """)
    if ends == "times out":
        with pytest.raises(ProviderUnavailable, match="timed out"):
            resolve([cli], timeout=1.0)
    else:
        assert value(resolve([cli])) == "value"
    grandchild = int(pid_file.read_text())
    assert _gone(grandchild), f"the setsid grandchild {grandchild} outlived the command"


# --- failures ------------------------------------------------------------------------------------


def test_non_zero_exit_reports_status_and_stderr_but_never_stdout(tmp_path: Path) -> None:
    cli = py_script(tmp_path, f"""\
        print({PLANTED!r})
        sys.stdout.flush()
        sys.stderr.write("vendor: access\\ndenied\\r\\n\\tfor \\x1b[31mdb\\x00 ")
        sys.exit(3)
    """)
    with pytest.raises(ProviderUnavailable) as caught:
        resolve([cli])
    message = str(caught.value)
    assert message == "command exited with status 3: vendor: access denied for [31mdb"
    # A failing command's stdout is dropped unread, so not even a frame's locals hold it.
    assert PLANTED not in everything_shown(caught.value, with_locals=True)


def test_death_by_signal_is_reported(tmp_path: Path) -> None:
    cli = sh_script(tmp_path, f"""\
        echo {PLANTED}
        kill -TERM $$
    """)
    with pytest.raises(ProviderUnavailable, match=r"^command was killed by signal SIGTERM$") as caught:
        resolve([cli])
    assert PLANTED not in everything_shown(caught.value, with_locals=True)


def test_only_the_tail_of_stderr_is_kept(tmp_path: Path) -> None:
    cli = py_script(tmp_path, """\
        sys.stderr.write("x" * 200_000 + " the-end")
        sys.exit(1)
    """)
    with pytest.raises(ProviderUnavailable) as caught:
        resolve([cli])
    message = str(caught.value)
    assert message.endswith("the-end") and len(message) < STDERR_KEEP + 100


def test_stdout_is_bounded(tmp_path: Path) -> None:
    cli = py_script(tmp_path, """\
        import time
        sys.stdout.write("y" * (2 << 20))
        sys.stdout.flush()
        time.sleep(30)
    """)
    started = time.monotonic()
    with pytest.raises(BadParameters, match="more than 1048576 bytes") as caught:
        resolve([cli])
    assert caught.value.parameter == "Command"
    assert time.monotonic() - started < 5


def _write(tmp_path: Path, name: str, content: bytes, mode: int) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("case", "expected", "parameter", "match"),
    [
        ("missing program", BadParameters, "Command", "not found"),
        ("program on no PATH entry", BadParameters, "Command", "not found"),
        ("no execute bit (refused even to root)", BadParameters, "Command", "not executable"),
        ("a directory", BadParameters, "Command", "not executable"),
        ("no interpreter line", BadParameters, "Command", "cannot be run"),
        ("empty JSON array", BadParameters, "Command", "must name a program"),
        ("JSON array of non-strings", BadParameters, "Command", "JSON array of strings"),
        ("unbalanced quotes", BadParameters, "Command", "unbalanced"),
        ("blank command", BadParameters, "Command", "must name a program"),
        ("missing working directory", BadParameters, "WorkingDirectory", "not a directory"),
        ("environment not an object", BadParameters, "Environment", "JSON object"),
        ("environment value not a string", BadParameters, "Environment", "JSON object"),
        ("environment overrides a provider variable", BadParameters, "Environment", "provider sets itself"),
        ("environment variable name with '='", BadParameters, "Environment", "without '='"),
        ("unknown output format", BadParameters, "OutputFormat", "one of raw, json"),
        ("json without Field", BadParameters, "Field", "Field is required"),
        ("bad StripNewline", BadParameters, "StripNewline", "true or false"),
        ("negative TtlSeconds", BadParameters, "TtlSeconds", "number of seconds from 0 to 86400"),
        ("zero TimeoutSeconds", BadParameters, "TimeoutSeconds", "from 0.01 to 3600"),
        ("Name as an option", BadParameters, "Name", "cannot start with '-'"),
        ("empty Name", BadParameters, "Name", "Name is required"),
    ],
)
def test_bad_configuration(tmp_path: Path, case: str, expected: type, parameter: str, match: str) -> None:
    ok = py_script(tmp_path, "print('v')")
    command: Any = [ok, "{Name}"]
    init: dict[str, Any] = {}
    name = "db"
    if case == "missing program":
        command = [str(tmp_path / "nope")]
    elif case == "program on no PATH entry":
        command = ["smtpconfig-no-such-program-x"]
    elif case == "no execute bit (refused even to root)":
        command = [_write(tmp_path, "noexec", b"#!/bin/sh\necho v\n", 0o644)]
    elif case == "a directory":
        command = [str(tmp_path)]
    elif case == "no interpreter line":
        command = [_write(tmp_path, "junk", b"\x7fNOT-AN-ELF\x00\x01", 0o755)]
    elif case == "empty JSON array":
        command = []
    elif case == "JSON array of non-strings":
        command = [ok, 1]
    elif case == "unbalanced quotes":
        command = f"{ok} 'open"
    elif case == "blank command":
        command = "   "
    elif case == "missing working directory":
        init["WorkingDirectory"] = str(tmp_path / "gone")
    elif case == "environment not an object":
        init["Environment"] = '["A=1"]'
    elif case == "environment value not a string":
        init["Environment"] = '{"A": 1}'
    elif case == "environment overrides a provider variable":
        init["Environment"] = '{"SMTPCONFIG_SECRET_NAME": "other"}'
    elif case == "unknown output format":
        init["OutputFormat"] = "xml"
    elif case == "json without Field":
        init["OutputFormat"] = "json"
    elif case == "environment variable name with '='":
        init["Environment"] = '{"A=B": "1"}'
    elif case == "bad StripNewline":
        init["StripNewline"] = "maybe"
    elif case == "negative TtlSeconds":
        init["TtlSeconds"] = "-1"
    elif case == "zero TimeoutSeconds":
        init["TimeoutSeconds"] = "0"
    elif case == "Name as an option":
        name = "--output=/etc/passwd"
    elif case == "empty Name":
        name = ""
    with pytest.raises(expected, match=match) as caught:
        resolve(command, name=name, **init)
    assert caught.value.parameter == parameter


def test_a_name_starting_with_a_dash_is_fine_when_it_only_travels_in_the_environment(tmp_path: Path) -> None:
    cli = py_script(tmp_path, 'print(os.environ["SMTPCONFIG_SECRET_NAME"])')
    assert value(resolve([cli], name="-weird")) == "-weird"


@pytest.mark.parametrize(
    ("stdout", "field", "expected", "match", "reason"),
    [
        ("", None, SecretNotFound, "printed nothing for secret 'db'", "empty stdout"),
        ("\n", None, SecretNotFound, "empty value for secret 'db'", "nothing left after the newline rule"),
        ("", "password", SecretNotFound, "printed nothing", "empty stdout in json mode"),
        (f'["{PLANTED}"]', "password", SecretNotFound, "not a JSON object", "an array, not an object"),
        (f'"{PLANTED}"', "password", SecretNotFound, "not a JSON object", "a string, not an object"),
        (f'{{"other": "{PLANTED}"}}', "password", SecretNotFound, "field 'password' is not in", "field missing"),
        ('{"password": 12345}', "password", SecretNotFound, "field 'password' .* not a string", "a number"),
        ('{"password": ""}', "password", SecretNotFound, "empty value", "an empty string"),
        (f'{{"password": "{PLANTED}"', "password", BadParameters, "not valid JSON", "truncated JSON"),
    ],
)
def test_output_problems_name_the_field_never_the_content(
    tmp_path: Path, stdout: str, field: str | None, expected: type, match: str, reason: str
) -> None:
    cli = py_script(tmp_path, 'sys.stdout.write(os.environ["OUT"])')
    init: dict[str, str] = {"Environment": json.dumps({"OUT": stdout})}
    if field is not None:
        init["OutputFormat"] = "json"
    with pytest.raises(expected, match=match) as caught:
        resolve([cli], field=field, **init)
    assert PLANTED not in everything_shown(caught.value), reason


def test_output_that_is_not_utf8_is_refused_without_its_bytes(tmp_path: Path) -> None:
    cli = py_script(tmp_path, f'sys.stdout.buffer.write(b"\\xff\\xfe" + {PLANTED!r}.encode())')
    with pytest.raises(BadParameters, match="not UTF-8") as caught:
        resolve([cli])
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert PLANTED not in everything_shown(caught.value)


# --- concurrency ---------------------------------------------------------------------------------


def test_fifty_threads_share_one_provider(tmp_path: Path) -> None:
    cli = sh_script(tmp_path, """\
        sleep 0.2
        case "$SMTPCONFIG_SECRET_NAME" in
            *7) echo "no such secret $SMTPCONFIG_SECRET_NAME" >&2; exit 7 ;;
        esac
        printf 'value-of-%s\\n' "$1"
    """)
    provider = ExecProvider(timeout=30)

    def one(i: int) -> str:
        try:
            return value(resolve([cli, "{Name}"], name=f"secret-{i}", provider=provider))
        except ProviderError as error:
            return f"error: {error}"

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - started
    for i, result in enumerate(results):
        if i % 10 == 7:
            assert result == f"error: command exited with status 7: no such secret secret-{i}"
        else:
            assert result == f"value-of-secret-{i}"
    assert elapsed < 50 * 0.2 / 2, "the calls should overlap"


def test_a_command_that_cannot_be_handed_its_environment_leaks_no_descriptor(tmp_path: Path) -> None:
    # JSON lets a value hold a lone surrogate, which no environment can carry: Popen raises
    # UnicodeEncodeError, not OSError, and the pipe the reaper reports through must close anyway.
    # The host refuses such an Environment when it is written; a provider called directly copes.
    provider = ExecProvider(timeout=5.0)
    init = prepare_initialization(ExecProvider, {"Command": "/bin/echo x"})
    init["Environment"] = {"VENDOR_PROFILE": "\ud800"}
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(UnicodeEncodeError):
            provider.resolve({"Name": "db"}, init)
    assert len(os.listdir("/proc/self/fd")) < open_before + 5


# --- through a running server ---------------------------------------------------------------------


def test_a_command_runner_that_cannot_start_is_not_blamed_on_the_command() -> None:
    # The server runs from an interpreter that an upgrade then removes: the reaper cannot start.
    # That is the server's trouble (UNAVAILABLE), not the instance's Command (a caller's mistake).
    base = short_dir("screaper")
    runtime = base / "runtime"
    (runtime / "bin").mkdir(parents=True)
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", runtime / "pyvenv.cfg")
    (runtime / "lib").symlink_to(Path(sys.prefix) / "lib")
    python = runtime / "bin" / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    server = ServerProcess(base / "data", env={"SMTPCONFIG_EXEC_COMMANDS": '[["/bin/echo"]]'})
    server.args[0] = str(python)
    server.start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)
            instance = pb.ProviderInstance(name="echo", provider_type="exec")
            instance.initialization["Command"].value = '["/bin/echo", "value"]'
            made = stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider

            def check(name: str) -> pb.CheckSecretResponse:
                return stub.CheckSecret(pb.CheckSecretRequest(
                    secret=secret_pb2.SecretObject(provider=made.id, parameters={"Name": name})))

            assert check("before").success
            python.unlink()
            with pytest.raises(grpc.RpcError) as failure:
                check("after")
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value.details()
        assert "command runner" in failure.value.details() and "/bin/echo" not in failure.value.details()
    finally:
        server.terminate()
        shutil.rmtree(base, ignore_errors=True)
