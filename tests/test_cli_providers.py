"""`smtpconfig providers ...` against a real server, with the real file provider behind it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpconfig.api.auth import new_token, token_hash
from smtpconfig.cli.main import main
from tests.kits.support import ServerThread, short_dir

PLANTED = "PLANTED-cli-provider-secret"
TYPED = "PLANTED-typed-on-the-command-line"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server whose operator lets instances read files under tmp_path and run /bin/true."""
    data_dir = short_dir()
    server = ServerThread(data_dir, file_directories=(tmp_path,), exec_commands=(("/bin/true",),)).start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_provider_commands_end_to_end(server, tmp_path: Path, capsys, monkeypatch) -> None:
    t = server.cli_args
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "smtp-password").write_text(PLANTED + "\n")

    code, out, _ = run(capsys, "providers", "types", *t)
    assert code == 0 and "vault" in out and "File" in out and "Directory" in out

    code, out, err = run(capsys, "providers", "create", *t, "--name", "mounted", "--type", "file",
                         "--set", f"Directory={secrets_dir}", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["Id"] == 1 and created["Source"] == "PROVIDER_SOURCE_API"

    code, out, _ = run(capsys, "providers", "check", *t, "--provider", "1", "--param", "File=smtp-password")
    assert code == 0 and "fingerprint: hmac-sha256:" in out and PLANTED not in out
    code, out, _ = run(capsys, "providers", "check", *t, "--provider", "1", "--param", "File=smtp-password", "--json")
    assert json.loads(out)["Cached"] is True

    # A secret initialization value from a file or an env var, never from the command line.
    (tmp_path / "token").write_text("tok-123\n")
    monkeypatch.setenv("VENDOR_TOKEN", "tok-456")
    code, out, err = run(capsys, "providers", "create", *t, "--name", "vendor", "--type", "exec",
                         "--set", "Command=/bin/true", "--set-file", f"Token={tmp_path / 'token'}")
    assert code == 0, err
    assert "(secret, set)" in out and "tok-123" not in out
    code, out, err = run(capsys, "providers", "update", *t, "2", "--set-env", "Token=VENDOR_TOKEN", "--name", "vendor-2")
    assert code == 0, err
    assert "vendor-2" in out

    code, out, _ = run(capsys, "providers", "list", *t)
    assert "mounted" in out and "vendor-2" in out and "tok-" not in out
    code, out, _ = run(capsys, "providers", "get", *t, "2", "--json")
    assert json.loads(out)["Initialization"]["Token"] == {"HasValue": True}

    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "Host": "smtp.example.com", "Port": 587, "RelayAuthenticationType": 2,
        "RelayUsername": {"SecretValue": "relay"},
        "RelayPassword": {"Provider": 1, "Parameters": {"File": "smtp-password"}},
        "SenderAccount": "relay@example.com", "SenderName": "Relay",
    }))
    assert run(capsys, "put", *t, "-f", str(profile))[0] == 0
    code, out, _ = run(capsys, "providers", "check", *t, "--field", "RelayPassword")
    assert code == 0 and "provider 1 (mounted, file)" in out

    code, _, err = run(capsys, "providers", "delete", *t, "1")
    assert code == 1 and "referenced by the SMTP profile" in err
    code, out, _ = run(capsys, "providers", "delete", *t, "2")
    assert code == 0 and "deleted provider instance 2" in out


def test_provider_command_errors_are_explained(server, tmp_path: Path, capsys) -> None:
    t = server.cli_args
    code, _, err = run(capsys, "providers", "create", *t, "--name", "x", "--type", "nope")
    assert code == 2 and "ProviderType: no provider type 'nope' is installed" in err
    code, _, err = run(capsys, "providers", "create", *t, "--name", "x", "--type", "exec", "--set", "novalue")
    assert code == 2 and "--set takes KEY=VALUE" in err
    code, _, err = run(capsys, "providers", "create", *t, "--name", "x", "--type", "exec", "--set-env", "Token=NOT_SET_X")
    assert code == 2 and "NOT_SET_X is not set" in err
    code, _, err = run(capsys, "providers", "update", *t, "5")
    assert code == 2 and "nothing to change" in err
    code, _, err = run(capsys, "providers", "get", *t, "5")
    assert code == 1 and "NOT_FOUND" in err


def test_a_secret_given_with_set_is_stored_with_a_warning_naming_the_safe_flags(tmp_path: Path, capsys) -> None:
    writer = new_token()  # providers:modify without providers:read: the warning comes from the reply
    data_dir = short_dir()
    server = ServerThread(data_dir, tokens=(("writer", token_hash(writer)),),
                          policy=(("writer", ("providers:modify",)),)).start()
    try:
        t = server.cli_args
        code, out, err = run(capsys, "providers", "create", *t, "--name", "bao", "--type", "vault",
                             "--set", "Host=https://vault.example.com:8200", "--set", f"Token={TYPED}")
        assert code == 0, err
        assert "Token = (secret, set)" in out
        assert "warning: Token is a secret" in err and "--set-file Token=PATH or --set-env Token=VAR" in err
        assert "Host is a secret" not in err and TYPED not in out + err

        # Plain values with --set, the secret from a file: nothing to warn about.
        (tmp_path / "token").write_text("from-a-file\n")
        code, out, err = run(capsys, "providers", "update", *t, "1", "--set", "Namespace=team-a",
                             "--set-file", f"Token={tmp_path / 'token'}")
        assert code == 0, err
        assert "warning" not in err

        (tmp_path / "writer.token").write_text(writer)
        code, out, err = run(capsys, "providers", "update", "--target", server.target,
                             "--token-file", str(tmp_path / "writer.token"), "1", "--set", f"Token={TYPED}")
        assert code == 0, err
        assert "warning: Token is a secret" in err and "--set-env Token=VAR" in err and TYPED not in out + err
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
