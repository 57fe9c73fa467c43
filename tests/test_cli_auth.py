"""The CLI and callers: making tokens, and reaching a server with a token file, the admin token
beside the socket, or a client certificate. Real servers, the CLI run in-process."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from smtpconfig.api.auth import TOKEN_PREFIX
from smtpconfig.cli.main import main
from tests.kits.profiles import BASIC_V2
from tests.kits.support import ServerProcess, ServerThread, short_dir
from tests.kits.testca import TestCA


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SMTPCONFIG_* variables and a working directory without ./smtpconfig-data, so the CLI
    finds only what a test gives it."""
    for name in list(os.environ):
        if name.startswith("SMTPCONFIG_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def profile_file(tmp_path: Path) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(BASIC_V2))
    return str(path)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    directory = short_dir("cli")
    yield directory / "data"
    shutil.rmtree(directory, ignore_errors=True)


def new_token(capsys: pytest.CaptureFixture, identity: str, *extra: str) -> tuple[str, str]:
    code, out, err = run(capsys, "token", "new", "--identity", identity, *extra)
    assert code == 0, err
    return out.strip(), err


def with_policy(entry: str) -> str:
    """`token new`'s lines as the operator finishes them for a file with no [policy] yet: the
    commented grant moved into a [policy] table of its own."""
    grant = entry.split("# In [policy]:\n", 1)[1].strip()
    assert grant.startswith("#   ")
    return entry + "\n[policy]\n" + grant.removeprefix("#   ") + "\n"


# --- making tokens ------------------------------------------------------------------------------


def test_token_new_prints_the_token_and_the_entry_that_admits_it(capsys) -> None:
    token, entry = new_token(capsys, "ci-runner")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40 and "\n" not in token
    # Standard error is a config-file fragment, ready to append: no [policy] table of its own.
    settings = tomllib.loads(entry)
    assert settings == {"tokens": [{"identity": "ci-runner", "sha256": hashlib.sha256(token.encode()).hexdigest()}]}
    # No permission is suggested unless one is named: the trust model table says which is which.
    assert '#   "ci-runner" = [...]' in entry and "trust model" in entry and "smtp:" not in entry
    assert token not in entry, "the token goes to standard output only"
    assert new_token(capsys, "ci-runner")[0] != token
    _, named = new_token(capsys, "loader", "--permission", "smtp:read", "--permission", "smtp:modify")
    assert tomllib.loads(with_policy(named))["policy"] == {"loader": ["smtp:read", "smtp:modify"]}
    with pytest.raises(SystemExit) as refused:
        run(capsys, "token", "new", "--identity", "x", "--permission", "smtp:everything")
    assert refused.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_token_new_refuses_an_identity_the_settings_would_refuse(capsys) -> None:
    code, out, err = run(capsys, "token", "new", "--identity", "spiffe://test/ns/x")
    assert code == 2 and out == "" and "plain name" in err


def test_token_hash_matches_token_new(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, entry = new_token(capsys, "x")
    digest = tomllib.loads(entry)["tokens"][0]["sha256"]
    path = tmp_path / "x.token"
    path.write_text(token + "\n")
    assert run(capsys, "token", "hash", str(path)) == (0, digest + "\n", "")
    monkeypatch.setattr("sys.stdin", io.StringIO(token))
    assert run(capsys, "token", "hash") == (0, digest + "\n", "")
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    code, _, err = run(capsys, "token", "hash")
    assert code == 2 and "no token" in err


def test_token_new_leaves_the_token_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The real CLI, under umask 022: `--out` creates the file 0600; `> FILE` (made 0644 by the
    shell) is narrowed to 0600 before the token goes in; standard error stays appendable TOML."""
    def token_new(*extra: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", "token", "new", "--identity", "ci", *extra],
            stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=60,
            preexec_fn=lambda: os.umask(0o022),
        )

    out = tmp_path / "ci.token"
    made = token_new("--out", str(out))
    assert made.returncode == 0 and made.stdout == "", made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text().strip()
    assert tomllib.loads(made.stderr)["tokens"][0]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    again = token_new("--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and out.read_text().strip() == token

    redirected = tmp_path / "redirected.token"
    with redirected.open("w") as file:
        redirected.chmod(0o644)
        shown = token_new(stdout=file)
    assert shown.returncode == 0, shown.stderr
    assert stat.S_IMODE(redirected.stat().st_mode) == 0o600 and "made it mode 0600" in shown.stderr
    digest = hashlib.sha256(redirected.read_text().strip().encode()).hexdigest()
    assert tomllib.loads(shown.stderr)["tokens"][0]["sha256"] == digest


# --- a server that knows the token --------------------------------------------------------------


def test_a_server_configured_with_token_new_output_accepts_the_token_file(
    capsys, clean: Path, tmp_path: Path, data_dir: Path, profile_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, entry = new_token(capsys, "ci", "--permission", "smtp:resolve")
    config = tmp_path / "smtpconfig.toml"
    config.write_text(with_policy(entry))  # as `token new` printed it, its grant put in [policy]
    token_file = tmp_path / "ci.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = ServerProcess(data_dir, "--config", str(config)).start()
    try:
        assert run(capsys, "put", *server.cli_args, "-f", profile_file)[0] == 0
        as_ci = ("--target", server.target, "--token-file", str(token_file))
        code, out, err = run(capsys, "resolve", *as_ci)
        assert code == 0, err
        assert "password: relay-password" in out
        code, _, err = run(capsys, "get", *as_ci)
        assert code == 1 and "PERMISSION_DENIED" in err and "'ci' does not have the smtp:read permission" in err

        # The same token from the environment, as a file name or as the value.
        monkeypatch.setenv("SMTPCONFIG_TOKEN_FILE", str(token_file))
        assert run(capsys, "resolve", "--target", server.target)[0] == 0
        monkeypatch.delenv("SMTPCONFIG_TOKEN_FILE")
        monkeypatch.setenv("SMTPCONFIG_TOKEN", token)
        assert run(capsys, "resolve", "--target", server.target)[0] == 0
        monkeypatch.delenv("SMTPCONFIG_TOKEN")

        # The audit trail names the token's identity.
        code, out, err = run(capsys, "audit", *server.cli_args, "--json")
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        resolved = [r for r in records if r["Method"] == "v2.ConfigService/ResolveSmtp"]
        assert {r["Identity"] for r in resolved} == {"ci"} and len(resolved) == 3
        assert token not in out
    finally:
        assert server.terminate() == 0
    log = server.log()
    assert "serving on" in log
    assert token not in log and server.token not in log


def test_a_named_token_file_is_used_even_beside_an_admin_token(capsys, clean: Path, tmp_path: Path, server) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("sct_not-a-token-this-server-knows\n")
    target = f"unix:{server.app.socket_path}"
    code, _, err = run(capsys, "get", "--target", target, "--token-file", str(wrong))
    assert code == 1 and "UNAUTHENTICATED" in err and "not known to this server" in err
    code, _, err = run(capsys, "get", "--target", target, "--token-file", str(tmp_path / "absent.token"))
    assert code == 2 and "cannot read the token file" in err


# --- no token -----------------------------------------------------------------------------------


def test_without_a_token_the_cli_says_how_to_give_one(capsys, clean: Path, server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpconfig")
    assert server.target.startswith("127.0.0.1:")
    code, out, err = run(capsys, "get", "--target", server.target)
    assert code == 1 and out == ""
    assert "UNAUTHENTICATED" in err and "--token-file" in err
    assert "refused: UNAUTHENTICATED" in caplog.text
    assert server.token not in caplog.text


# --- the admin token beside the socket ------------------------------------------------------------


def test_the_cli_finds_the_admin_token_beside_the_socket(
    capsys, clean: Path, server, profile_file: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpconfig")
    target = f"unix:{server.app.socket_path}"
    assert server.app.socket_path.parent / "admin.token" == server.token_path
    code, _, err = run(capsys, "put", "--target", target, "-f", profile_file)
    assert code == 0, err
    code, out, err = run(capsys, "get", "--target", target)
    assert code == 0, err
    assert "smtp.example.com" in out
    # With only the data directory named, the CLI finds both the socket and the token in it.
    monkeypatch.setenv("SMTPCONFIG_DATA_DIR", str(server.data_dir))
    code, out, err = run(capsys, "get")
    assert code == 0 and "smtp.example.com" in out, err
    assert server.token not in out + err + caplog.text


# --- mTLS ---------------------------------------------------------------------------------------


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[ServerThread, TestCA, dict]]:
    ca = TestCA(tmp_path / "pki")
    server_cert = ca.issue("server")
    clients = {
        "operator": ca.issue_client("operator", "operator", uris=("spiffe://test/ns/operator",)),
        "viewer": ca.issue_client("viewer", "viewer", dns=("viewer.test",)),
    }
    root = short_dir("clitls")
    server = ServerThread(
        root / "data", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
        unix_socket="",
        policy=(("spiffe://test/ns/operator", ("smtp:read", "smtp:modify")), ("dns:viewer.test", ("smtp:read",))),
    ).start()
    try:
        yield server, ca, clients
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_cli_over_mtls(capsys, clean: Path, mtls, profile_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server, ca, clients = mtls

    def as_(name: str) -> tuple[str, ...]:
        paths = clients[name]
        return ("--target", server.target, "--ca", str(ca.path), "--cert", str(paths.cert), "--key", str(paths.key))

    code, _, err = run(capsys, "put", *as_("operator"), "-f", profile_file)
    assert code == 0, err
    code, out, err = run(capsys, "get", *as_("viewer"))
    assert code == 0 and "smtp.example.com" in out, err
    code, _, err = run(capsys, "put", *as_("viewer"), "-f", profile_file)
    assert code == 1 and "'dns:viewer.test' does not have the smtp:modify permission" in err

    # The same from the environment.
    monkeypatch.setenv("SMTPCONFIG_TLS_CA", str(ca.path))
    monkeypatch.setenv("SMTPCONFIG_TLS_CERT", str(clients["viewer"].cert))
    monkeypatch.setenv("SMTPCONFIG_TLS_KEY", str(clients["viewer"].key))
    assert run(capsys, "get", "--target", server.target)[0] == 0
    monkeypatch.delenv("SMTPCONFIG_TLS_CERT")
    monkeypatch.delenv("SMTPCONFIG_TLS_KEY")

    # Without a client certificate the handshake fails, and the CLI says so (see below).
    code, _, err = run(capsys, "get", "--target", server.target, "--ca", str(ca.path))
    assert code == 1 and f"TLS handshake with {server.target} failed" in err
    # A certificate needs its key.
    code, _, err = run(capsys, "get", "--target", server.target, "--ca", str(ca.path),
                       "--cert", str(clients["viewer"].cert))
    assert code == 2 and "give both --cert and --key" in err
    code, _, err = run(capsys, "get", "--target", server.target, "--ca", str(ca.path),
                       "--cert", str(clients["viewer"].cert), "--key", str(ca.directory / "absent-key.pem"))
    assert code == 2 and "absent-key.pem" in err


HANDSHAKES = [
    ("no client certificate where the server asks for one", "mtls", ("--ca", "ca"),
     "failed: the server closed the connection; most likely the server asks for a client certificate"),
    ("a client certificate from another CA", "mtls", ("--ca", "ca", "--cert", "stranger.cert", "--key", "stranger.key"),
     "most likely the server did not accept the client certificate"),
    ("the server's certificate from a CA the client does not trust", "mtls",
     ("--ca", "other-ca", "--cert", "viewer.cert", "--key", "viewer.key"), "is not trusted by --ca"),
    ("plaintext to a TLS port", "mtls", (), "closed the connection before answering: it most likely talks TLS only"),
    ("TLS to a plaintext port", "plain", ("--ca", "ca"), "the server does not talk TLS there; leave out --ca"),
]


@pytest.mark.parametrize(("case", "server", "flags", "says"), HANDSHAKES, ids=[h[0] for h in HANDSHAKES])
def test_a_failed_tls_handshake_is_named_with_its_likely_cause(
    capsys, clean: Path, mtls, tmp_path: Path, case: str, server: str, flags: tuple[str, ...], says: str
) -> None:
    tls_server, ca, clients = mtls
    other = TestCA(tmp_path / "other")
    files = {"ca": ca.path, "other-ca": other.path,
             "viewer.cert": clients["viewer"].cert, "viewer.key": clients["viewer"].key}
    stranger = other.issue_client("stranger", "stranger", dns=("viewer.test",))
    files.update({"stranger.cert": stranger.cert, "stranger.key": stranger.key})
    plain = ServerThread(tmp_path / "plain", unix_socket="").start() if server == "plain" else None
    try:
        target = plain.target if plain else tls_server.target
        code, _, err = run(capsys, "get", "--target", target, *(str(files.get(f, f)) for f in flags))
    finally:
        if plain:
            plain.stop()
    assert code == 1 and says in err, err
    assert "is it running" not in err, "the server is running: the handshake failed"


def test_the_cli_prints_no_grpc_log_lines_before_its_explanation(tmp_path: Path) -> None:
    """A failed handshake makes gRPC's C core log a line in the client (`I1206 ...
    ssl_transport_security.cc ... Handshake failed`); the CLI's own sentence is what the user reads."""
    ca = TestCA(tmp_path / "pki")
    plain = ServerThread(tmp_path / "plain", unix_socket="").start()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMTPCONFIG_", "GRPC_"))}
        done = subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", "get", "--target", plain.target, "--ca", str(ca.path)],
            capture_output=True, text=True, env=clean, timeout=60,
        )
    finally:
        plain.stop()
    assert done.returncode == 1 and done.stderr.startswith("smtpconfig: TLS handshake with"), done.stderr
    assert "ssl_transport_security" not in done.stderr


def test_the_cli_never_sends_a_token_in_clear_text_off_this_machine(tmp_path, capsys) -> None:
    # 192.0.2.1 (TEST-NET-1) is never dialled: the CLI refuses before opening a channel.
    from smtpconfig.cli.main import main

    token_file = tmp_path / "t"
    token_file.write_text("sct_some-token-value-for-the-test\n")
    code = main(["get", "--target", "192.0.2.1:2587", "--token-file", str(token_file), "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "clear text" in err and "some-token-value" not in err


# --- the admin token goes only to its own server ----------------------------------------------------
# Each case starts a listener of the test's own where the CLI is pointed (or would fall back to),
# with the admin token planted where the CLI looks for it, and runs the CLI as a separate process.

PLANTED_ADMIN = "sct_planted-admin-token-never-for-strangers-42"


class Listener:
    """A gRPC server standing in for whoever listens at an address: it answers every call
    UNIMPLEMENTED and keeps the metadata each call brought."""

    def __init__(self, address: str) -> None:
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port(address)
        self.server.start()

    def service(self, handler_call_details):
        self.metadata.append(dict(handler_call_details.invocation_metadata))
        return None  # UNIMPLEMENTED, after the headers are seen

    def stop(self) -> None:
        self.server.stop(0)


def cli_process(cwd: Path, data: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPCONFIG_")}
    return subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "get", "--timeout", "5", *argv],
        capture_output=True, text=True, cwd=cwd, timeout=60,
        env={**clean_env, "SMTPCONFIG_DATA_DIR": str(data), **env},
    )


def planted_data_dir(root: Path) -> Path:
    """A data directory as the server leaves it: 0700, with an admin.token (0600)."""
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "admin.token").write_text(PLANTED_ADMIN + "\n")
    (data / "admin.token").chmod(0o600)
    return data


def _tcp(root: Path, data: Path) -> tuple[Listener, list[str]]:
    listener = Listener("127.0.0.1:0")
    return listener, ["--target", f"127.0.0.1:{listener.port}"]


def _socket_elsewhere(root: Path, data: Path) -> tuple[Listener, list[str]]:
    path = root / "elsewhere.sock"
    return Listener(f"unix:{path}"), ["--target", f"unix:{path}"]


def _stranger_in_the_data_dir(root: Path, data: Path) -> tuple[Listener, list[str]]:
    listener = Listener(f"unix:{data / 'smtpconfig.sock'}")
    os.chown(data / "smtpconfig.sock", 65534, -1)  # nobody's socket beside our token
    return listener, []


def _data_dir_socket_is_a_link(root: Path, data: Path) -> tuple[Listener, list[str]]:
    elsewhere = root / "elsewhere.sock"
    listener = Listener(f"unix:{elsewhere}")
    os.chown(elsewhere, 65534, -1)
    (data / "smtpconfig.sock").symlink_to(elsewhere)  # the link is ours; what it leads to is not
    return listener, []


def _token_linked_beside_a_socket(root: Path, data: Path) -> tuple[Listener, list[str]]:
    lure = root / "lure"
    lure.mkdir(mode=0o700)
    (lure / "admin.token").symlink_to(data / "admin.token")
    return Listener(f"unix:{lure / 'smtpconfig.sock'}"), ["--target", f"unix:{lure / 'smtpconfig.sock'}"]


def _socket_in_a_shared_directory(root: Path, data: Path) -> tuple[Listener, list[str]]:
    shared = root / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could swap the socket or the token after the CLI looked
    shutil.copy(data / "admin.token", shared / "admin.token")
    return Listener(f"unix:{shared / 'smtpconfig.sock'}"), ["--target", f"unix:{shared / 'smtpconfig.sock'}"]


STRANGERS = [
    (_tcp, "a loopback TCP port: any local user may be the one listening"),
    (_socket_elsewhere, "a socket outside the data directory, of the same owner"),
    (_stranger_in_the_data_dir, "the data directory's socket owned by another uid than the token"),
    (_data_dir_socket_is_a_link, "the data directory's socket is a link to another's socket"),
    (_token_linked_beside_a_socket, "an admin.token beside the socket that is a link to the real one"),
    (_socket_in_a_shared_directory, "socket and token in a directory others may write to"),
]


@pytest.mark.parametrize(("place", "why"), STRANGERS, ids=[s[1] for s in STRANGERS])
def test_the_admin_token_is_not_sent_to_a_stranger(place, why: str) -> None:
    root = short_dir("stranger")
    try:
        data = planted_data_dir(root)
        listener, argv = place(root, data)
        try:
            result = cli_process(root, data, *argv)
        finally:
            listener.stop()
        assert len(listener.metadata) == 1, f"the CLI did not call the listener: {result.stderr}"
        assert "authorization" not in listener.metadata[0], why
        assert PLANTED_ADMIN not in repr(listener.metadata) + result.stdout + result.stderr
        assert result.returncode == 1 and "UNIMPLEMENTED" in result.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_admin_token_is_sent_over_its_own_data_directory_socket() -> None:
    # The control for the cases above: the same listener, where the server's socket belongs.
    root = short_dir("own")
    try:
        data = planted_data_dir(root)
        listener = Listener(f"unix:{data / 'smtpconfig.sock'}")
        try:
            result = cli_process(root, data)
        finally:
            listener.stop()
        assert [m.get("authorization") for m in listener.metadata] == [f"Bearer {PLANTED_ADMIN}"], result.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_without_the_servers_socket_the_cli_connects_nowhere() -> None:
    # The server is down and someone listens where a TCP fallback would go: the CLI must not dial.
    root = short_dir("nosock")
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        squatter.setblocking(False)
        data = planted_data_dir(root)
        address = f"127.0.0.1:{squatter.getsockname()[1]}"
        result = cli_process(root, data, "--timeout", "3", SMTPCONFIG_LISTEN=address)
        with pytest.raises(BlockingIOError):
            squatter.accept()  # no connection is waiting
        assert result.returncode == 1, result.stderr
        assert f"no server socket at {data / 'smtpconfig.sock'}" in result.stderr
        assert "make run" in result.stderr and "--target" in result.stderr
        assert PLANTED_ADMIN not in result.stdout + result.stderr
    finally:
        squatter.close()
        shutil.rmtree(root, ignore_errors=True)
