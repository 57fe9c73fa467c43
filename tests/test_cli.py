"""The operator CLI against a real server: Keyfactor JSON in and out, clear errors on bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from smtpconfig.cli.client import default_target
from smtpconfig.cli.main import _parser, main
from tests.kits.profiles import BASIC_V1, BASIC_V2, DROP, OAUTH_V2, edit


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
    from smtpconfig.cli.client import CliError

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


# --- issue 10: what a newcomer tripped over ------------------------------------------------------


@pytest.mark.parametrize("doc,field", [(BASIC_V2, "RelayPassword"), (OAUTH_V2, "ClientSecret")], ids=["basic", "oauth"])
def test_put_takes_back_exactly_what_get_json_printed(server, tmp_path, capsys, doc, field) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, doc))
    _, out, _ = run(capsys, "get", *server.cli_args, "--json")
    assert json.loads(out)[field] == {"HasValue": True}
    code, out, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, out, "read.json"))
    assert code == 0, err
    edited = {**json.loads(Path(tmp_path / "read.json").read_text()), "SenderName": "Edited"}
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, edited, "edited.json"))
    assert code == 1 and "ABORTED" in err, "the file's etag is stale after the put above"


def test_a_read_file_cannot_move_the_stored_password_to_another_host(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    _, out, _ = run(capsys, "get", *server.cli_args, "--json")
    moved = {**json.loads(out), "Host": "collector.example.net"}
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, moved))
    assert code == 2 and "RelayPassword.HasValue" in err and "Host" in err


def test_a_v1_payload_sent_to_v2_is_named_as_such(server, tmp_path, capsys) -> None:
    v1_file = str(Path(__file__).parent.parent / "examples" / "basic-v1.json")
    code, _, err = run(capsys, "put", *server.cli_args, "--api", "v2", "-f", v1_file)
    assert code == 2 and "API v1 payload" in err and "--api v1" in err and "has no field named" not in err


def test_get_text_writes_booleans_as_json_does(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    _, out, _ = run(capsys, "get", *server.cli_args)
    assert "UseSSL                   true" in out and "True" not in out


def test_resolve_warns_about_credentials_only_when_it_prints_some(server, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "resolve", *server.cli_args)
    assert code == 1 and "NOT_FOUND" in err and "warning" not in err
    # An anonymous relay: the answer holds no credential, so nothing to warn about.
    anonymous = {k: v for k, v in BASIC_V2.items() if k not in ("RelayUsername", "RelayPassword")}
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, {**anonymous, "RelayAuthenticationType": 0}))
    code, out, err = run(capsys, "resolve", *server.cli_args)
    assert code == 0 and "warning" not in err and "password" not in out


@pytest.mark.parametrize("target", ["nonsense", "smtp.example.com", "127.0.0.1:port"])
def test_a_target_that_is_no_address_is_refused_before_dialling(capsys, target) -> None:
    code, _, err = run(capsys, "get", "--target", target, "--timeout", "30")
    assert code == 2 and "host:port" in err and "unix:PATH" in err


def test_providers_check_names_the_flag_and_stores_nothing_it_claims(server, capsys) -> None:
    code, _, err = run(capsys, "providers", "check", *server.cli_args, "--field", "Nope")
    assert code == 2 and "  --field: must be one of" in err
    assert "nothing was stored" not in err and "ProfileField" not in err


def test_providers_flush_names_the_flag_that_gave_a_bad_field(server, capsys) -> None:
    code, _, err = run(capsys, "providers", "flush", *server.cli_args, "--provider", "9", "--param", "Nope=x")
    assert code == 2 and "  --provider: " in err, err
    assert "Secret.Provider" not in err


@pytest.mark.parametrize("command", [["audit"], ["get"], ["get", "--json"]])
def test_a_reader_that_goes_away_ends_the_cli_quietly(server, tmp_path, capsys, command) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    reader, writer = os.pipe()
    os.close(reader)  # `| head -0`: gone before the first line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", *command, *server.cli_args],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(writer)
    assert result.stderr == "" and result.returncode == 141


def _subparsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_every_option_says_what_it_is_for_and_defaults_are_shown() -> None:
    for parser in _subparsers(_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {'/'.join(action.option_strings) or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                text = action.help % {"default": action.default, "prog": parser.prog}
                assert str(action.default) in text, f"{parser.prog} {action.option_strings[0]}: default not shown"


def test_a_v1_read_put_back_says_what_v1_cannot_keep(server, tmp_path, capsys) -> None:
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V1))
    _, out, _ = run(capsys, "get", *server.cli_args, "--api", "v1", "--json")
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, out, "v1-read.json"))
    assert code == 2 and "RelayPassword is missing" in err and "through v2" in err
    back = {**json.loads(out), "RelayPassword": "relay-password"}
    code, _, err = run(capsys, "put", *server.cli_args, "-f", write(tmp_path, back, "v1-back.json"))
    assert code == 0, err


# --- status details, as grpcio-status reads them --------------------------------------------------


def test_a_refusal_whose_message_is_not_ascii_still_lists_its_fields(server, tmp_path, capsys) -> None:
    """grpcio-status trusts the details only when their message matches the call's, which travels
    percent-encoded: a non-ASCII one must come back equal, or the field list would be lost."""
    run(capsys, "put", *server.cli_args, "-f", write(tmp_path, BASIC_V2))
    code, _, err = run(capsys, "put", *server.cli_args, "--mask", "Pört", "-f", write(tmp_path, {"Port": 465}, "p.json"))
    assert code == 2 and "nothing was stored" in err
    assert "  update_mask: 'Pört' is not a field of this profile" in err, err


class _Refusal(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata) -> None:
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


def test_status_details_that_disagree_with_the_call_are_not_shown(capsys) -> None:
    """A stand-in server (ours never does this) answers with a google.rpc.Status whose message is
    not the call's: its field list is not trusted, and the call's own code and message are shown."""
    from concurrent.futures import ThreadPoolExecutor

    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="another call's message")
    status.details.add().Pack(error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="Host", description="stale")]
    ))
    refusal = _Refusal(
        grpc.StatusCode.INVALID_ARGUMENT, "this call's message", (("grpc-status-details-bin", status.SerializeToString()),)
    )

    def get_smtp(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort_with_status(refusal)
        raise AssertionError("abort_with_status returned")

    stand_in = grpc.server(ThreadPoolExecutor(max_workers=2))
    stand_in.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "smtpconfig.v2.ConfigService", {"GetSmtp": grpc.unary_unary_rpc_method_handler(get_smtp)},
    ),))
    port = stand_in.add_insecure_port("127.0.0.1:0")
    stand_in.start()
    try:
        code, _, err = run(capsys, "get", "--target", f"127.0.0.1:{port}", "--timeout", "10")
    finally:
        stand_in.stop(None)
    assert code == 2
    assert "INVALID_ARGUMENT: this call's message" in err, err
    assert "stale" not in err and "Host" not in err
