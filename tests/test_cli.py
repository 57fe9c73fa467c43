"""The operator CLI against a real server: Keyfactor JSON in and out, clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from service.cli_client import default_target
from tests.conftest import BASIC_V1, BASIC_V2, OAUTH_V2
from tests.test_validation import DROP, edit


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, doc, name: str = "profile.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_put_and_get_v2_keyfactor_json(server, tmp_path, capsys) -> None:
    code, out, _ = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, OAUTH_V2))
    assert code == 0 and "etag" in out
    code, out, _ = run(capsys, "get", *server.cli_args, "--json")
    shown = json.loads(out)
    assert shown["ClientSecret"] == {"HasValue": True}
    assert "client-secret-1" not in out
    assert shown["TokenEndpoint"] == OAUTH_V2["TokenEndpoint"]
    # The CLI's one JSON dialect: enums by name; `put -f` reads names and Keyfactor's numbers alike.
    assert shown["RelayAuthenticationType"] == "RELAY_AUTHENTICATION_TYPE_OAUTH_CLIENT_CREDENTIALS"
    assert shown["etag"] and shown["updateTime"].endswith("Z")


def test_get_json_round_trips_through_put(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    _, out, _ = run(capsys, "get", *server.cli_args, "--json")
    doc = json.loads(out)
    # A read never carries the password back, so a full replace needs it again.
    doc["RelayPassword"] = {"SecretValue": "again"}
    doc["Port"] = 2525
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, doc, "edited.json"))
    assert code == 0, err
    _, out, _ = run(capsys, "get", *server.cli_args, "--json")
    assert json.loads(out)["Port"] == 2525


def test_v1_payload_is_detected_and_read_back_through_v1(server, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V1))
    assert code == 0, err
    _, out, _ = run(capsys, "get", *server.cli_args, "--api", "v1", "--json")
    shown = json.loads(out)
    assert shown.pop("etag") and shown.pop("updateTime")
    assert shown == edit(BASIC_V1, RelayPassword=DROP)


def test_human_get_describes_secrets_without_values(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    code, out, _ = run(capsys, "get", *server.cli_args)
    assert code == 0
    assert "RelayPassword            inline (value withheld)" in out
    assert "2 (Basic)" in out and "relay-password" not in out


def test_mask_and_if_match(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    code, _, err = run(capsys, "put", *server.cli_args, "--mask", "Port", "-f", write(tmp_path, {"Port": 465}, "p.json"))
    assert code == 0, err
    _, out, _ = run(capsys, "get", *server.cli_args, "--json")
    assert json.loads(out)["Port"] == 465 and json.loads(out)["RelayPassword"]["HasValue"]
    code, _, err = run(capsys, "put", *server.cli_args, "--if-match", "1-000000000000", "-f", write(tmp_path, BASIC_V2))
    assert code == 1 and "ABORTED" in err


def test_invalid_profile_lists_every_field_and_rule(server, tmp_path, capsys) -> None:
    doc = edit(BASIC_V2, Host="smtp://x", Port=0, SenderName="a\r\nb")
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, doc))
    assert code == 2
    assert "nothing was stored" in err
    assert "  Host: must be a host name or IP address, without a scheme" in err
    assert "  Port: is required" in err
    assert "  SenderName: must not contain control characters" in err


BAD_FILES = [
    ("not JSON", "{\"Host\": ", "is not JSON"),
    ("not an object", "[1, 2]", "must hold a JSON object"),
    ("unknown field", {"Host": "h", "Hostname": "h"}, "Hostname"),
    ("wrong type", {"Host": "h", "Port": "twenty-five"}, "Port"),
    ("v2 fields in a v1 payload", {"RelayUsername": "u", "ClientId": {"SecretValue": "c"}}, "exist only in API v2"),
]


@pytest.mark.parametrize("reason,content,says", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_explained(server, tmp_path, capsys, reason, content, says) -> None:
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, content))
    assert code == 2 and says in err


def test_missing_file(server, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "put", *server.cli_args, "-f", str(tmp_path / "absent.json"))
    assert code == 2 and "cannot read" in err


def test_keyfactor_deprecated_sender_address_is_ignored(server, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, {**BASIC_V1, "SenderAddress": "x@y.z"}))
    assert code == 0 and "ignoring SenderAddress" in err


def test_unreachable_server_says_so(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "get", "--target", f"unix:{tmp_path}/absent.sock", "--timeout", "2")
    assert code == 1 and "cannot reach the server" in err


def test_empty_store_get_is_not_found(server, capsys) -> None:
    code, _, err = run(capsys, "get", *server.cli_args)
    assert code == 1 and "NOT_FOUND" in err and "no SMTP profile is stored yet" in err


def test_default_target_is_the_data_directory_socket_or_nothing(tmp_path) -> None:
    from service.cli_client import CliError

    assert default_target({"SMTPCONFIG_TARGET": "127.0.0.1:1"}) == "127.0.0.1:1"
    (tmp_path / "smtpconfig.sock").touch()
    assert default_target({"SMTPCONFIG_DATA_DIR": str(tmp_path)}) == f"unix:{tmp_path}/smtpconfig.sock"
    # No socket: no guess at a TCP address that anyone on the machine could be listening on.
    with pytest.raises(CliError, match="no server socket at /nonexistent/smtpconfig.sock.*--target"):
        default_target({"SMTPCONFIG_DATA_DIR": "/nonexistent", "SMTPCONFIG_LISTEN": "[::1]:9"})


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.json"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_shipped_examples_are_accepted(server, capsys, example: Path) -> None:
    code, _, err = run(capsys, "put", *server.cli_args, "-f", str(example))
    assert code == 0, err
