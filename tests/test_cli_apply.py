"""`smtpconfig test` and `smtpconfig resolve` against a real server and a real SMTP relay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smtpconfig.cli.main import main
from tests.kits.smtpkit import SmtpServer
from tests.kits.support import ServerThread, short_dir
from tests.kits.testca import make_pki

PASSWORD = "PLANTED-cli-apply-pw"


@pytest.fixture
def relay(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    with SmtpServer("starttls", certs=pki.localhost, credentials={"relay": PASSWORD}) as smtp:
        data_dir = short_dir()
        server = ServerThread(data_dir, ca_bundle=pki.ca, smtp_timeout=5.0).start()
        try:
            yield server, smtp
        finally:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_test_and_resolve_commands(relay, tmp_path: Path, capsys) -> None:
    server, smtp = relay
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "Host": "localhost", "Port": smtp.port, "RelayAuthenticationType": 2,
        "RelayUsername": {"SecretValue": "relay"}, "RelayPassword": {"SecretValue": PASSWORD},
        "SenderAccount": "relay@example.com", "SenderName": "Relay", "UseSSL": True,
    }))
    t = server.cli_args
    code, out, err = run(capsys, "test", *t, "--to", "ops@example.com", "-f", str(profile))
    assert code == 0, err
    assert "tls      ok" in out and "AUTH PLAIN" in out and "test message sent" in out
    assert list(smtp.wait_for_message().rcpt_tos) == ["ops@example.com"]
    assert PASSWORD not in out + err

    # Not saved by test: nothing stored yet.
    assert run(capsys, "get", *t)[0] == 1
    assert run(capsys, "put", *t, "-f", str(profile))[0] == 0
    code, out, err = run(capsys, "test", *t, "--to", "ops@example.com", "--json")
    assert code == 0 and json.loads(out)["success"] is True
    assert {s["outcome"] for s in json.loads(out)["steps"]} <= {"STEP_OUTCOME_OK", "STEP_OUTCOME_SKIPPED"}

    code, out, err = run(capsys, "resolve", *t, "--json")
    resolved = json.loads(out)
    assert code == 0 and resolved["credentials"]["password"] == PASSWORD
    # The one dialect: the profile's Keyfactor names, enums by name, the response's own names.
    assert resolved["profile"]["RelayAuthenticationType"] == "RELAY_AUTHENTICATION_TYPE_BASIC"
    assert resolved["cacheFor"].endswith("s") and resolved["etag"]

    code, out, err = run(capsys, "resolve", *t)
    assert code == 0 and "warning: the output contains credentials" in err
    assert f"password: {PASSWORD}" in out

    profile.write_text(profile.read_text().replace(PASSWORD, "wrong"))
    code, out, _ = run(capsys, "test", *t, "--to", "ops@example.com", "-f", str(profile))
    assert code == 1 and "auth     FAILED" in out and "hint:" in out and "test failed" in out


def test_resolve_refresh_is_limited_per_identity(relay, tmp_path: Path, capsys) -> None:
    server, smtp = relay
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "Host": "localhost", "Port": smtp.port, "RelayAuthenticationType": 2,
        "RelayUsername": {"SecretValue": "relay"}, "RelayPassword": {"SecretValue": PASSWORD},
        "SenderAccount": "relay@example.com", "SenderName": "Relay", "UseSSL": True,
    }))
    t = server.cli_args
    assert run(capsys, "put", *t, "-f", str(profile))[0] == 0
    code, out, err = run(capsys, "resolve", *t, "--refresh", "--json")
    assert code == 0, err
    assert json.loads(out)["credentials"]["password"] == PASSWORD
    code, out, err = run(capsys, "resolve", *t, "--refresh")
    assert code == 1 and "RESOURCE_EXHAUSTED" in err and "retry in" in err, err
    assert PASSWORD not in out + err
    assert run(capsys, "resolve", *t)[0] == 0  # a plain resolution is not refused


def _v1_file(tmp_path: Path, port: int, password: str) -> str:
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({
        "Id": 1, "Host": "localhost", "Port": port, "RelayAuthenticationType": 2,
        "RelayUsername": "relay", "RelayPassword": password,
        "SenderAccount": "relay@example.com", "SenderName": "Relay", "UseSSL": True,
    }))
    return str(path)


@pytest.mark.parametrize("api", [[], ["--api", "v1"]], ids=["detected", "named"])
def test_a_v1_file_is_tested_through_v1(relay, tmp_path: Path, capsys, api) -> None:
    server, smtp = relay
    t = server.cli_args
    code, out, err = run(capsys, "test", *t, *api, "--to", "ops@example.com", "-f", _v1_file(tmp_path, smtp.port, PASSWORD))
    assert code == 0, err
    assert "test message sent" in out
    assert list(smtp.wait_for_message().rcpt_tos) == ["ops@example.com"]
    assert PASSWORD not in out + err
    code, out, err = run(capsys, "test", *t, *api, "--json", "--to", "ops@example.com",
                         "-f", _v1_file(tmp_path, smtp.port, PASSWORD))
    assert code == 0 and json.loads(out)["profile"]["Host"] == "localhost"
    assert "RelayPassword" not in json.loads(out)["profile"] and PASSWORD not in out

    code, out, err = run(capsys, "test", *t, *api, "--to", "ops@example.com", "-f", _v1_file(tmp_path, smtp.port, "wrong"))
    assert code == 1 and "auth" in err and "test message sent" not in out
    assert "read one with `get --json`" not in err
