"""Settings: defaults < TOML file < SMTPCONFIG_* env < flags, and refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import DEFAULT_LISTEN, Settings, SettingsError, load


def test_defaults() -> None:
    settings = load(env={})
    assert settings.data_dir == Path("smtpconfig-data")
    assert settings.listen == (DEFAULT_LISTEN,)
    assert settings.socket_path == Path("smtpconfig-data/smtpconfig.sock")
    assert settings.key_path == Path("smtpconfig-data/secret.key") and settings.key_is_generated


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


def test_empty_unix_socket_disables_it() -> None:
    assert load(env={"SMTPCONFIG_UNIX_SOCKET": ""}).socket_path is None


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
]


@pytest.mark.parametrize("reason,given,says", BAD, ids=[b[0] for b in BAD])
def test_bad_settings_are_refused(tmp_path: Path, reason: str, given: dict, says: str) -> None:
    config = None
    if "file" in given:
        config = tmp_path / "c.toml"
        config.write_text(given["file"])
    with pytest.raises(SettingsError, match=says):
        load(env=given.get("env", {}), config_file=config)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load(env={}, config_file=tmp_path / "absent.toml")


def test_settings_are_immutable() -> None:
    with pytest.raises(Exception):
        Settings().data_dir = Path("x")  # type: ignore[misc]
