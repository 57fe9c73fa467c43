"""Settings: defaults < TOML file < SMTPCONFIG_* env < flags, and refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpconfig.settings import DEFAULT_LISTEN, Settings, SettingsError, load


def test_defaults() -> None:
    settings = load(env={})
    assert settings.data_dir == Path("smtpconfig-data")
    assert settings.listen == (DEFAULT_LISTEN,)
    assert settings.socket_path == Path("smtpconfig-data/smtpconfig.sock")
    assert settings.key_path == Path("smtpconfig-data/secret.key") and settings.key_is_generated
    assert settings.event_loop == "uvloop"  # a dependency wherever the service runs (not on Windows)


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "smtpconfig.toml"
    config.write_text('data_dir = "state"\nlisten = ["127.0.0.1:7000"]\ngrace_period = 3\nlog_level = "debug"\n')
    from_file = load(env={}, config_file=config)
    assert from_file.data_dir == tmp_path / "state"  # relative to the file
    assert from_file.listen == ("127.0.0.1:7000",) and from_file.grace_period == 3.0

    env = {"SMTPCONFIG_CONFIG": str(config), "SMTPCONFIG_LISTEN": "127.0.0.1:7001, [::1]:7002", "SMTPCONFIG_GRACE_PERIOD": "4"}
    from_env = load(env=env)
    assert from_env.listen == ("127.0.0.1:7001", "[::1]:7002") and from_env.grace_period == 4.0
    assert from_env.log_level == "debug"

    from_flags = load(env=env, flags={"grace_period": 5.0, "listen": ["localhost:7003"], "data_dir": None})
    assert from_flags.grace_period == 5.0 and from_flags.listen == ("localhost:7003",)
    assert from_flags.data_dir == tmp_path / "state"
    assert from_flags.sources == ("defaults", str(config), "env", "flags")


def test_what_api_made_providers_may_reach(tmp_path: Path) -> None:
    config = tmp_path / "smtpconfig.toml"
    config.write_text('exec_commands = [["/usr/bin/vendor-cli", "get"], ["/opt/pam/fetch"]]\n'
                      'file_directories = ["secrets", "/run/secrets"]\n')
    settings = load(env={}, config_file=config)
    assert settings.exec_commands == (("/usr/bin/vendor-cli", "get"), ("/opt/pam/fetch",))
    assert settings.file_directories == (tmp_path / "secrets", Path("/run/secrets"))  # relative to the file
    assert settings.path_directories == ()
    from_env = load(env={"SMTPCONFIG_EXEC_COMMANDS": '[["/bin/vendor"]]',
                         "SMTPCONFIG_PATH_DIRECTORIES": "/var/run/secrets/vault:/etc/ca"})
    assert from_env.exec_commands == (("/bin/vendor",),)
    assert from_env.path_directories == (Path("/var/run/secrets/vault"), Path("/etc/ca"))


def test_empty_unix_socket_disables_it() -> None:
    assert load(env={"SMTPCONFIG_UNIX_SOCKET": ""}).socket_path is None


def test_an_empty_variable_sets_the_config_files_setting_back_to_its_default(tmp_path: Path) -> None:
    """How a shipped config runs on a laptop: `SMTPCONFIG_TLS_CERT_FILE=` drops its TLS files."""
    config = tmp_path / "smtpconfig.toml"
    config.write_text('listen = ["0.0.0.0:2587"]\ntls_cert_file = "tls.crt"\ntls_key_file = "tls.key"\n'
                      'tls_client_ca_file = "ca.crt"\ngrace_period = 20\nlog_format = "json"\n'
                      'health_listen = "0.0.0.0:8081"\nadmin_token = false\nplugins_allow = ["env"]\n')
    env = {"SMTPCONFIG_TLS_CERT_FILE": "", "SMTPCONFIG_TLS_KEY_FILE": "", "SMTPCONFIG_TLS_CLIENT_CA_FILE": "",
           "SMTPCONFIG_LISTEN": "127.0.0.1:0", "SMTPCONFIG_GRACE_PERIOD": "", "SMTPCONFIG_LOG_FORMAT": "",
           "SMTPCONFIG_HEALTH_LISTEN": "", "SMTPCONFIG_ADMIN_TOKEN": ""}
    settings = load(env=env, config_file=config)
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file) == (None, None, None)
    assert (settings.grace_period, settings.log_format, settings.health_listen) == (10.0, "text", "")
    assert settings.admin_token is True and settings.listen == ("127.0.0.1:0",)
    assert settings.plugins_allow == ("env",), "an unset variable changes nothing"
    # Where the table says empty means none, it still does.
    none = load(env={"SMTPCONFIG_PLUGINS_ALLOW": "", "SMTPCONFIG_LISTEN": ""}, config_file=config)
    assert none.plugins_allow == () and none.listen == ()


BAD = [
    ("unknown key in file", {"file": "datadir = 'x'\n"}, "unknown setting 'datadir'"),
    ("file is not TOML", {"file": "listen = [\n"}, "not valid TOML"),
    ("listen is not a list", {"file": "listen = 5\n"}, "list of host:port"),
    ("grace period not a number", {"env": {"SMTPCONFIG_GRACE_PERIOD": "soon"}}, "number of seconds"),
    ("grace period negative", {"env": {"SMTPCONFIG_GRACE_PERIOD": "-1"}}, "between 0 and 3600"),
    ("unknown log level", {"env": {"SMTPCONFIG_LOG_LEVEL": "loud"}}, "one of debug"),
    ("address without port", {"env": {"SMTPCONFIG_LISTEN": "127.0.0.1"}}, "host:port"),
    ("address with a bad port", {"env": {"SMTPCONFIG_LISTEN": "127.0.0.1:99999"}}, "0-65535"),
    ("wildcard address", {"env": {"SMTPCONFIG_LISTEN": "0.0.0.0:2587"}}, "not a loopback"),
    ("nothing to listen on", {"env": {"SMTPCONFIG_LISTEN": "", "SMTPCONFIG_UNIX_SOCKET": ""}}, "nothing to listen on"),
    ("socket path too long", {"env": {"SMTPCONFIG_UNIX_SOCKET": "/tmp/" + "s" * 120}}, "longer than 107"),
    ("cert without key", {"env": {"SMTPCONFIG_TLS_CERT_FILE": "c.pem"}}, "go together"),
    ("client CA without TLS", {"env": {"SMTPCONFIG_TLS_CLIENT_CA_FILE": "ca.pem"}}, "needs tls_cert_file"),
    ("socket open to everyone", {"env": {"SMTPCONFIG_UNIX_SOCKET_MODE": "0666"}}, "every local user"),
    ("socket mode not octal", {"env": {"SMTPCONFIG_UNIX_SOCKET_MODE": "rw"}}, "octal file mode"),
    ("socket mode locks out its owner", {"env": {"SMTPCONFIG_UNIX_SOCKET_MODE": "0060"}}, "owner read and write"),
    ("socket identity looks like a certificate", {"env": {"SMTPCONFIG_UNIX_SOCKET_IDENTITY": "dns:x"}}, "plain name"),
    ("socket identity without a policy entry", {"env": {"SMTPCONFIG_UNIX_SOCKET_IDENTITY": "app"}}, "no entry in \\[policy\\]"),
    ("token with the token instead of its hash", {"file": '[[tokens]]\nidentity = "app"\nsha256 = "sct_abc"\n'}, "64 hex digits"),
    ("token with extra keys", {"file": '[[tokens]]\nidentity = "app"\nsha256 = "' + "0" * 64 + '"\ntoken = "x"\n'},
     "exactly `identity` and `sha256`"),
    ("token identity not plain", {"file": '[[tokens]]\nidentity = "spiffe://x/y"\nsha256 = "' + "0" * 64 + '"\n'}, "plain name"),
    ("two tokens with one hash", {"file": ('[[tokens]]\nidentity = "a"\nsha256 = "' + "0" * 64 + '"\n') * 2}, "same hash"),
    ("unknown permission", {"file": '[policy]\napp = ["smtp:write"]\n'}, "unknown permission 'smtp:write'"),
    ("policy value not a list", {"file": '[policy]\napp = "smtp:read"\n'}, "list of permissions"),
    ("policy identity malformed", {"file": '[policy]\n"has space" = ["smtp:read"]\n'}, "an identity is"),
    # Bidirectional controls make a name show as another in logs and audit records (service/core/bidi.py).
    ("policy URI identity with an override", {"file": '[policy]\n"spiffe://x/ns/\\u202enimda" = ["smtp:read"]\n'},
     r"policy\.'spiffe://x/ns/\\u202enimda': an identity must not contain bidirectional control"),
    ("policy dns: identity with an isolate", {"file": '[policy]\n"dns:ops\\u2067.example" = ["smtp:read"]\n'},
     "bidirectional control"),
    ("policy cn: identity with a right-to-left mark", {"file": '[policy]\n"cn:ops\\u200f" = ["smtp:read"]\n'},
     "bidirectional control"),
    ("declared provider name with an override",
     {"file": '[[providers]]\nid = 1\nname = "vault\\u202e"\ntype = "vault"\n'},
     r"providers\[0\]\.name must not contain bidirectional control"),
    ("token identity with an override (not a plain name either)",
     {"file": '[[tokens]]\nidentity = "ci\\u202e"\nsha256 = "' + "0" * 64 + '"\n'}, "plain name"),
    ("socket identity with an isolate (not a plain name either)",
     {"env": {"SMTPCONFIG_UNIX_SOCKET_IDENTITY": "app\u2066"}}, "plain name"),
    ("unknown log format", {"env": {"SMTPCONFIG_LOG_FORMAT": "xml"}}, "text or json"),
    ("unknown event loop", {"env": {"SMTPCONFIG_EVENT_LOOP": "trio"}}, "event_loop must be uvloop or asyncio"),
    ("metrics address without port", {"env": {"SMTPCONFIG_METRICS_LISTEN": "127.0.0.1"}}, "host:port"),
    ("metrics on the API port", {"env": {"SMTPCONFIG_METRICS_LISTEN": DEFAULT_LISTEN}}, "more than one listener"),
    ("message limit too small", {"env": {"SMTPCONFIG_MAX_MESSAGE_BYTES": "10"}}, "at least 1024"),
    ("negative rate", {"env": {"SMTPCONFIG_RESOLVE_RATE": "-1"}}, "between 0"),
    ("zero deadline", {"env": {"SMTPCONFIG_DEFAULT_DEADLINE": "0"}}, "more than 0"),
    ("burst of zero", {"env": {"SMTPCONFIG_TEST_BURST": "0"}}, "at least 1"),
    ("exec command not a list", {"file": 'exec_commands = "/bin/sh"\n'}, "list of commands"),
    ("exec command empty", {"file": "exec_commands = [[]]\n"}, "non-empty list of strings"),
    ("exec command relative", {"file": 'exec_commands = [["vendor-cli", "get"]]\n'}, "absolute path"),
    ("exec commands env not JSON", {"env": {"SMTPCONFIG_EXEC_COMMANDS": "/bin/sh"}}, "JSON array of commands"),
    ("directories not a list", {"file": "file_directories = 5\n"}, "list of directories"),
    ("directory from env relative", {"env": {"SMTPCONFIG_PATH_DIRECTORIES": "secrets"}}, "absolute path"),
]


@pytest.mark.parametrize("reason,given,says", BAD, ids=[b[0] for b in BAD])
def test_bad_settings_are_refused(tmp_path: Path, reason: str, given: dict, says: str) -> None:
    config = None
    if "file" in given:
        config = tmp_path / "c.toml"
        config.write_text(given["file"])
    with pytest.raises(SettingsError, match=says):
        load(env=given.get("env", {}), config_file=config)


def test_non_loopback_listen_needs_tls_or_an_explicit_force(tmp_path: Path) -> None:
    wildcard = {"SMTPCONFIG_LISTEN": "0.0.0.0:2587"}
    with pytest.raises(SettingsError, match="TLS is not configured"):
        load(env=wildcard)
    forced = load(env={**wildcard, "SMTPCONFIG_ALLOW_INSECURE_LISTEN": "true"})
    assert forced.listen == ("0.0.0.0:2587",)
    tls = load(env={**wildcard, "SMTPCONFIG_TLS_CERT_FILE": "c.pem", "SMTPCONFIG_TLS_KEY_FILE": "k.pem"})
    assert tls.tls_cert_file == Path("c.pem") and tls.tls_client_ca_file is None


def test_callers_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    digest = "ab" * 32
    config.write_text(
        'unix_socket_identity = "app"\n'
        f'[[tokens]]\nidentity = "ops"\nsha256 = "{digest.upper()}"\n'
        '[policy]\napp = ["smtp:resolve", "smtp:resolve"]\nops = ["*"]\n'
        '"spiffe://example.org/ns/a/sa/b" = ["smtp:read"]\n"dns:ops.example.org" = ["audit:read"]\n'
    )
    settings = load(env={}, config_file=config)
    assert settings.tokens == (("ops", digest),)  # hashes are kept in lower case
    assert dict(settings.policy) == {
        "app": ("smtp:resolve",), "ops": ("*",),
        "spiffe://example.org/ns/a/sa/b": ("smtp:read",), "dns:ops.example.org": ("audit:read",),
    }
    assert settings.unix_socket_identity == "app"


def test_limits_and_socket_settings_from_env() -> None:
    settings = load(env={
        "SMTPCONFIG_UNIX_SOCKET_MODE": "0660", "SMTPCONFIG_UNIX_SOCKET_GROUP": "mail",
        "SMTPCONFIG_MAX_MESSAGE_BYTES": "65536", "SMTPCONFIG_DEFAULT_DEADLINE": "5",
        "SMTPCONFIG_MAX_CONCURRENT_RPCS": "0", "SMTPCONFIG_RESOLVE_RATE": "0", "SMTPCONFIG_TEST_BURST": "2",
        "SMTPCONFIG_ADMIN_TOKEN": "false", "SMTPCONFIG_LOG_FORMAT": "JSON",
    })
    assert settings.unix_socket_mode == 0o660 and settings.unix_socket_group == "mail"
    assert settings.max_message_bytes == 65536 and settings.default_deadline == 5.0
    assert settings.max_concurrent_rpcs == 0 and settings.resolve_rate == 0.0 and settings.test_burst == 2
    assert settings.admin_token is False and settings.log_format == "json"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load(env={}, config_file=tmp_path / "absent.toml")


def test_settings_are_immutable() -> None:
    with pytest.raises(Exception):  # noqa: B017 (kept as written: narrowing it changes the assertion)
        Settings().data_dir = Path("x")  # type: ignore[misc]


def test_callers_are_declared_in_the_config_file_only() -> None:
    with pytest.raises(SettingsError, match="config file only"):
        load(env={}, flags={"tokens": "ops"})
    with pytest.raises(SettingsError, match="config file only"):
        load(env={}, flags={"policy": "ops=*"})
