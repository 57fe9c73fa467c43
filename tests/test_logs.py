"""`smtpconfig.ops.logs`: JSON and text lines as configured on the root logger, the call's fields, and the
redactor as a backstop for values that reach a log call by mistake."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from smtpconfig.core.secret import Secret
from smtpconfig.ops import logs
from smtpconfig.ops.logs import CALL, MASK, Redactor, call_fields, configure, forget_secrets, redact, remember_secret

PLANTED = "PLANTED-log-secret-c0ffee"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Call:
    request_id: str
    method: str
    identity: str | None


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    forget_secrets()
    root = logging.getLogger()
    level = root.level
    yield
    if logs._handler is not None:
        root.removeHandler(logs._handler)
        logs._handler = None
    root.setLevel(level)
    forget_secrets()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def in_call(call: Call):
    """Set CALL for the block (a context manager)."""
    class _In:
        def __enter__(self):
            self.token = CALL.set(call)

        def __exit__(self, *exc):
            CALL.reset(self.token)

    return _In()


# --- format ----------------------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message(out: io.StringIO) -> None:
    configure("info", "json", stream=out)
    logging.getLogger("smtpconfig.test").info("applied profile %s", 3)
    logging.getLogger("smtpconfig.test").debug("below the level")
    (line,) = json_lines(out)
    assert TIME.match(line["time"]), line["time"]
    assert line == {"time": line["time"], "level": "INFO", "logger": "smtpconfig.test", "message": "applied profile 3"}


def test_lines_inside_a_call_carry_its_request_id_method_and_identity(out: io.StringIO) -> None:
    configure("debug", "json", stream=out)
    log = logging.getLogger("smtpconfig.test")
    with in_call(Call("req-41", "v2.ConfigService/GetSmtp", "spiffe://example/app")):
        assert call_fields() == {"request_id": "req-41", "method": "v2.ConfigService/GetSmtp",
                                 "identity": "spiffe://example/app"}
        log.info("inside")
    with in_call(Call("req-42", "v2.ConfigService/SetSmtp", None)):
        log.info("no identity")
    log.info("outside")
    inside, anonymous, outside = json_lines(out)
    assert (inside["request_id"], inside["method"], inside["identity"]) == (
        "req-41", "v2.ConfigService/GetSmtp", "spiffe://example/app")
    assert anonymous["request_id"] == "req-42" and "identity" not in anonymous
    assert not {"request_id", "method", "identity"} & outside.keys()
    assert call_fields() == {}


def test_text_lines_show_the_request_id(out: io.StringIO) -> None:
    configure("info", "text", stream=out)
    log = logging.getLogger("smtpconfig.test")
    with in_call(Call("req-7", "v2.ConfigService/GetSmtp", "uid:1000")):
        log.warning("slow backend")
    log.warning("no call")
    inside, outside = out.getvalue().splitlines()
    stamp, rest = inside.split(" ", 1)
    assert TIME.match(stamp) and rest == "WARNING smtpconfig.test [req-7] slow backend"
    assert outside.split(" ", 1)[1] == "WARNING smtpconfig.test no call"


def test_a_text_record_over_several_lines_is_indented_so_no_line_passes_for_a_record(out: io.StringIO) -> None:
    configure("info", "text", stream=out)
    forged = "2026-01-01T00:00:00.000Z INFO smtpconfig.api.calls FORGED"
    # A library's message with line breaks of every kind, and a traceback whose message has one.
    logging.getLogger("some.library").warning("first\n%s\rsecond\r\n%s", forged, forged)
    try:
        raise ValueError(f"boom\n{forged}")
    except ValueError:
        logging.getLogger("smtpconfig.test").exception("failed")
    lines = out.getvalue().splitlines()
    starts = [line for line in lines if not line.startswith("  ")]
    assert [line.split(" ")[2] for line in starts] == ["some.library", "smtpconfig.test"]
    assert all(TIME.match(line.split(" ", 1)[0]) for line in starts)
    assert lines.count(f"  {forged}") == 3 and "  second" in lines
    assert "  Traceback (most recent call last):" in lines


def test_exceptions_give_exc_type_and_a_redacted_traceback(out: io.StringIO) -> None:
    configure("info", "json", stream=out)
    try:
        raise ValueError(f"could not log in with password={PLANTED}")
    except ValueError:
        logging.getLogger("smtpconfig.test").exception("login failed")
    (line,) = json_lines(out)
    assert line["exc_type"] == "ValueError"
    assert "Traceback" in line["exc_info"] and "password=[REDACTED]" in line["exc_info"]
    assert PLANTED not in out.getvalue()


def test_configure_writes_to_stderr_and_replaces_its_own_handler(capsys) -> None:
    configure("info", "text")
    configure("info", "json")  # again: one handler, the new format
    logging.getLogger("smtpconfig.test").info("to stderr")
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert json.loads(line)["message"] == "to stderr" and captured.out == ""


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_configure_refuses_unknown_levels_and_formats(level: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        configure(level, fmt)


# --- redaction -------------------------------------------------------------------------------------

REDACTIONS = [
    # (text, expected, why)
    ("Authorization: Bearer eyJhbGciOi.J9.sig-_x==", "Authorization: [REDACTED]", "a header as logged"),
    ("sent Bearer abc.DEF-123~+/xyz_0= to the relay", "sent Bearer [REDACTED] to the relay", "a bearer token in prose"),
    ("callers must bring a bearer token", "callers must bring a bearer token", "the words bearer token"),
    ("{'authorization': 'Basic dXNlcjpwYXNz', 'x': 1}", "{'authorization': '[REDACTED]', 'x': 1}",
     "a headers dict repr"),
    ("password=hunter22 user=bob", "password=[REDACTED] user=bob", "key=value"),
    ("RelayPassword = 'pw with spaces' next", "RelayPassword = '[REDACTED]' next", "quoted value, keys by substring"),
    ('{"client_secret": "s3\\"cr3t", "scope": "x"}', '{"client_secret": "[REDACTED]", "scope": "x"}',
     "JSON with an escaped quote in the value"),
    ("secret_id=4f1c-aa&role_id=r1", "secret_id=[REDACTED]&role_id=r1", "a form body"),
    ("access_token=tok123", "access_token=[REDACTED]", "token in the key name"),
    ("X-Api-Key=k-123; api_key=k-456", "X-Api-Key=[REDACTED]; api_key=[REDACTED]", "API keys"),
    ('token: "abc-123"', 'token: "[REDACTED]"', "colon with a quoted value"),
    ('password="cut off mid value', 'password="[REDACTED]"', "an unterminated quote masks to the end"),
    ("token: the endpoint refused", "token: the endpoint refused", "prose after a colon stays"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nnext line",
     "[REDACTED]\nnext line", "a PEM private key block"),
    ("key: -----BEGIN PRIVATE KEY-----\nMIIEvQ (truncated", "key: [REDACTED]", "a cut-off PEM block"),
    ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nMIIB\n"
     "-----END CERTIFICATE-----", "certificates are public"),
    ("https://relay:pa55word@vault.example:8200/v1", "https://relay:[REDACTED]@vault.example:8200/v1",
     "a password in a URL"),
    ("provider 3 (vault, vault) did not answer within 10s", "provider 3 (vault, vault) did not answer within 10s",
     "ordinary messages are untouched"),
]


@pytest.mark.parametrize(("text", "expected", "why"), REDACTIONS, ids=[r[2] for r in REDACTIONS])
def test_redaction_patterns(text: str, expected: str, why: str) -> None:
    assert redact(text) == expected


def test_remembered_values_are_masked_anywhere() -> None:
    remember_secret("vendor-pw-8c1d")
    remember_secret("vendor-pw-8c1d-longer")  # contains the first: masked whole
    remember_secret("short")  # too short to mask without garbling words
    assert redact("a vendor-pw-8c1d-longer b vendor-pw-8c1dX c short") == "a [REDACTED] b [REDACTED]X c short"


def test_only_the_most_recent_values_are_remembered() -> None:
    remember_secret("oldest-value-0000")
    for n in range(logs.REMEMBERED_MAX):
        remember_secret(f"value-number-{n:05d}")
    assert redact("oldest-value-0000") == "oldest-value-0000"
    assert redact(f"value-number-{logs.REMEMBERED_MAX - 1:05d}") == MASK
    assert redact("value-number-00000") == MASK


def test_a_planted_secret_in_log_arguments_never_reaches_the_stream(out: io.StringIO) -> None:
    configure("debug", "json", stream=out)
    log = logging.getLogger("smtpconfig.test")
    log.info("header %s", f"Authorization: Bearer {PLANTED}")
    log.info("form %s", {"client_secret": PLANTED})
    log.info("wrapped %s", Secret(PLANTED))
    remember_secret(PLANTED)
    log.info("bare %s", PLANTED)
    log.info(f"in the format string {PLANTED}")
    try:
        raise RuntimeError(PLANTED)
    except RuntimeError:
        log.error("failed", exc_info=True, stack_info=True)
    assert PLANTED not in out.getvalue()
    messages = [line["message"] for line in json_lines(out)]
    assert messages[:4] == [
        "header Authorization: [REDACTED]", "form {'client_secret': '[REDACTED]'}", "wrapped **********",
        "bare [REDACTED]",
    ]
    assert messages[4] == "in the format string [REDACTED]"


def test_the_redactor_rewrites_the_record_for_any_handler() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "pw %s and password=%s", ("x", "hunter22"), None)
    assert Redactor().filter(record) is True
    assert (record.msg, record.args) == ("pw x and password=[REDACTED]", ())


def test_a_call_whose_arguments_do_not_fit_is_still_logged_and_redacted() -> None:
    # (Through the filter directly: pytest's own capture handler raises on such a record.)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "for %s the secret_id=%s", (PLANTED,), None)
    assert Redactor().filter(record) is True
    assert record.msg == "for %s the secret_id=[REDACTED] [arguments dropped: they do not match the format]"
    assert PLANTED not in record.getMessage()


def test_a_secret_references_path_stays_readable() -> None:
    # `Secret` is the Keyfactor parameter naming where a secret lives, not the secret itself.
    from smtpconfig.ops.logs import redact

    assert redact("secret not found {Secret=smtp/relay, Key=password}") == "secret not found {Secret=smtp/relay, Key=password}"
    assert redact("secret=abc client_secret=def") == "secret=[REDACTED] client_secret=[REDACTED]"


# --- values, not names -------------------------------------------------------------------------------

KEPT = [
    # (text, why it is not a secret)
    ("PWD=/home/operator/smtpconfig", "the shell's working directory, not a password"),
    ("OLDPWD=/tmp", "the shell's previous working directory"),
    ("SMTPCONFIG_SECRET_NAME=prod-db", "names which secret the exec command fetches"),
    ('{"SecretName": "smtp-relay", "x": 1}', "a name, quoted"),
    ("token_endpoint=https://login.example.com/tenant/oauth2/v2.0/token", "where tokens come from"),
    ("TokenEndpoint: 'https://login.example.com/t/token'", "the profile field, quoted"),
    ("password_file=/run/secrets/relay-password", "where a password is kept"),
    ("expires_in=3600 token_type=Bearer", "what kind of token"),
    ("SMTPCONFIG_KEY_FILE=/etc/smtpconfig/key/secret.key", "where the key file is"),
]


@pytest.mark.parametrize(("text", "why"), KEPT, ids=[k[1] for k in KEPT])
def test_names_that_only_describe_a_secret_keep_their_values(text: str, why: str) -> None:
    assert redact(text) == text


MASKED = [
    # (text, expected, why)
    ("pwd=hunter22&user=bob", "pwd=[REDACTED]&user=bob", "pwd in a form is a password"),
    ("DB_PWD=hunter22", "DB_PWD=[REDACTED]", "pwd as a part of a name"),
    ("PASSWORD=hunter22", "PASSWORD=[REDACTED]", "upper case"),
    ("SMTPCONFIG_TOKEN=sct_abc", "SMTPCONFIG_TOKEN=[REDACTED]", "the CLI's token variable"),
    ("SMTPCONFIG_KEY=q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=", "SMTPCONFIG_KEY=[REDACTED]",
     "the key that seals values at rest"),
    ("token_endpoint_secret=abc", "token_endpoint_secret=[REDACTED]", "a secret, whatever comes before"),
    ("SMTPCONFIG_SECRET_NAME=token=abc123", "SMTPCONFIG_SECRET_NAME=token=[REDACTED]",
     "a kept value is searched again"),
    ('{"RelayPassword": "pw", "SecretName": "x"}', '{"RelayPassword": "[REDACTED]", "SecretName": "x"}',
     "one masked, its neighbour kept"),
    ("passphrase = 'two words'", "passphrase = '[REDACTED]'", "a passphrase"),
]


@pytest.mark.parametrize(("text", "expected", "why"), MASKED, ids=[m[2] for m in MASKED])
def test_secret_named_values_are_still_masked(text: str, expected: str, why: str) -> None:
    assert redact(text) == expected


def _log_in(password: str) -> None:
    raise ValueError(f"could not log in with password={password}")


def test_a_traceback_keeps_its_source_lines_and_masks_its_values(out: io.StringIO) -> None:
    configure("debug", "text", stream=out)
    relay_password = PLANTED
    try:
        _log_in(password=relay_password)
    except ValueError:
        logging.getLogger("smtpconfig.test").exception("login failed")
    text = out.getvalue()
    # Code names values and holds none: its lines stay readable (indented as the record's)...
    assert "\n      _log_in(password=relay_password)\n" in text
    assert '\n      raise ValueError(f"could not log in with password={password}")\n' in text
    # ...and the value in the exception's message is masked.
    assert "\n  ValueError: could not log in with password=[REDACTED]\n" in text
    assert PLANTED not in text


def test_a_message_is_not_a_traceback() -> None:
    # A message shaped like a traceback frame (text a relay sent back, say) gets no exemption.
    assert redact('  File "x.py", line 1, in y\n    password = hunter22') == (
        '  File "x.py", line 1, in y\n    password = [REDACTED]')


# --- gRPC's own lines (its C core writes to standard error directly) ----------------------------------


def _tls_server(tmp_path, *extra: str, verbosity: str | None):
    """`smtpconfig serve` with TLS on loopback; `verbosity` is the operator's GRPC_VERBOSITY."""
    from tests.kits.support import ServerProcess, short_dir
    from tests.kits.testca import TestCA

    cert = TestCA(tmp_path / "pki").issue("server")
    server = ServerProcess(short_dir("glog") / "data", "--tls-cert", str(cert.cert), "--tls-key", str(cert.key), *extra)
    server.env.pop("GRPC_VERBOSITY", None)
    if verbosity is not None:
        server.env["GRPC_VERBOSITY"] = verbosity
    return server.start()


def _plaintext_call(server) -> None:
    """A plaintext client on the TLS port: the server's handshake fails."""
    from tests.kits.support import wait_serving

    address = server.log().split("serving on ", 1)[1].split(",", 1)[0]
    with pytest.raises(TimeoutError, match="UNAVAILABLE"):
        wait_serving(address, timeout=1)


def test_with_log_format_json_the_stream_holds_json_lines_only(tmp_path) -> None:
    """The operator turned gRPC's lines up (GRPC_VERBOSITY=INFO): a failed handshake's C-core line
    comes out as a JSON object too, and nothing is lost at exit."""
    server = _tls_server(tmp_path, "--log-format", "json", verbosity="INFO")
    try:
        _plaintext_call(server)
    finally:
        assert server.terminate() == 0
    lines = [json.loads(line) for line in server.log().splitlines()]  # every line, or this fails
    assert all(isinstance(line, dict) and {"time", "level", "logger", "message"} <= line.keys() for line in lines)
    core = [line for line in lines if line["logger"] == "grpc"]
    assert any("Handshake failed" in line["message"] for line in core), lines
    assert lines[-1]["message"] == "stopped", "the last line written before exit is there"


def test_grpc_logs_errors_only_unless_the_operator_asks(tmp_path) -> None:
    server = _tls_server(tmp_path, verbosity=None)
    try:
        _plaintext_call(server)
    finally:
        assert server.terminate() == 0
    assert "serving on" in server.log() and "ssl_transport_security" not in server.log()


@pytest.mark.parametrize(("line", "logger", "level", "why"), [
    ('{"time": "t", "level": "INFO", "logger": "x", "message": "m"}', "x", "INFO", "a JSON line passes as it is"),
    ("I1206 13:06:30.472562   13565 ssl_transport_security.cc:2563] Handshake failed", "grpc", "INFO", "C core"),
    ("E1206 13:06:30.472562 13565 chttp2_server.cc:1051] bind failed", "grpc", "ERROR", "C core error"),
    ("Traceback (most recent call last):", "stderr", "WARNING", "anything else"),
    ("{not json", "stderr", "WARNING", "only a JSON object passes"),
])
def test_each_foreign_line_becomes_one_json_object(line: str, logger: str, level: str, why: str) -> None:
    from smtpconfig.ops.grpc_log import as_json_line

    wrapped = json.loads(as_json_line(line + "\n"))
    assert (wrapped["logger"], wrapped["level"]) == (logger, level), why
    assert as_json_line("\n") is None
    assert PLANTED not in as_json_line(f"W1206 13:06:30.472562 1 x.cc:1] authorization: Bearer {PLANTED}")
