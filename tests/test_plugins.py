"""Loading plugins: entry points, broken plugins reported and skipped, strict mode, allow/block
lists, the server's own report of them (what a restart would change), provider instances declared
in the config file, and what a plugin's author reads in the log when the plugin has a bug."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from smtpconfig.plugin.manager import PluginError, load_plugins
from smtpconfig.settings import load as load_settings
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.pluginkit import install_fake
from tests.kits.support import ServerProcess, ServerThread, short_dir, violations

GOOD = """
from smtpconfig.plugin import Resolved, Secret, SecretProvider, Parameter, hookimpl

class Echo(SecretProvider):
    name = "{type_name}"
    parameters = (Parameter("Name", instance_level=True),)
    def resolve(self, instance_parameters, initialization):
        return Resolved(Secret(instance_parameters["Name"]))

@hookimpl
def register_secret_providers(register):
    register(Echo)
"""

BROKEN = {
    "raises at import": 'raise RuntimeError("plugin import blew up")\n',
    "misspelt hook": "from smtpconfig.plugin import hookimpl\n\n@hookimpl\ndef register_secret_provider(register):\n    pass\n",
    "registers a non-provider": "from smtpconfig.plugin import hookimpl\n\n"
                                "@hookimpl\ndef register_secret_providers(register):\n    register(dict)\n",
    "registers a taken type name": GOOD.replace("{type_name}", "exec"),
    "hook raises": "from smtpconfig.plugin import hookimpl\n\n"
                   "@hookimpl\ndef register_secret_providers(register):\n    raise ValueError('no')\n",
    # ListPlugins shows the error to providers:read callers: it goes through the log redactor.
    "quotes a token": 'raise RuntimeError("login failed, token=PLANTED-import-token")\n',
}
SAYS = {
    "raises at import": "RuntimeError: plugin import blew up",
    "misspelt hook": "unknown hook 'register_secret_provider'; did you mean 'register_secret_providers'?",
    "registers a non-provider": "not a subclass",
    "registers a taken type name": "already registered by plugin exec",
    "hook raises": "ValueError: no",
    "quotes a token": "RuntimeError: login failed, token=[REDACTED]",
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_plugin_is_reported_and_skipped(tmp_path: Path, monkeypatch, case: str) -> None:
    module = f"fake_{case.replace(' ', '_').replace('-', '_')}"
    install_fake(tmp_path, "fake", module, BROKEN[case])
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins()
    status = next(s for s in loaded.report if s.name == "fake")
    assert status.status == "failed"
    assert SAYS[case] in status.error and "PLANTED" not in status.error
    assert {"exec", "inline"} <= loaded.provider_types.keys()  # the others are untouched
    assert loaded.provider_types["exec"].plugin == "exec"
    with pytest.raises(PluginError, match=r"1 plugin\(s\) failed to load: fake \("):
        load_plugins(strict=True)


def test_good_plugin_is_loaded_and_lists_and_blocks(tmp_path: Path, monkeypatch) -> None:
    install_fake(tmp_path, "echo", "fake_echo_plugin", GOOD.replace("{type_name}", "echo"))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins()
    assert loaded.provider_types["echo"].plugin == "echo"
    status = next(s for s in loaded.report if s.name == "echo")
    assert (status.status, status.source, status.version, status.provider_types) == ("loaded", "entry point", "0.1", ["echo"])
    assert "echo" not in load_plugins(allow=["file"]).provider_types
    assert next(s for s in load_plugins(allow=["file"]).report if s.name == "echo").status == "not allowed"
    blocked = load_plugins(block=["exec", "echo"])
    assert "exec" not in blocked.provider_types and "echo" not in blocked.provider_types
    assert "inline" in load_plugins(allow=[]).provider_types  # first-party plugins ignore the allowlist


def test_names_in_the_plugin_lists_that_no_plugin_has_are_warned_about(tmp_path: Path, monkeypatch) -> None:
    install_fake(tmp_path, "echo", "fake_echo_listed", GOOD.replace("{type_name}", "echo"))
    install_fake(tmp_path, "idle", "fake_idle", "def register_secret_providers(register):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins(allow=["ecko", "file", "zzz"], block=["exce"])
    assert loaded.warnings == [
        "plugins_allow names 'ecko', which is not an installed plugin (did you mean 'echo'?)",
        "plugins_allow names 'zzz', which is not an installed plugin (installed: echo, exec, file, idle, inline, vault)",
        "plugins_block names 'exce', which is not an installed plugin (did you mean 'exec'?)",
    ]
    # A hook without its @hookimpl marker is no hook: the plugin loads and offers nothing.
    assert load_plugins().warnings == [
        "plugin idle registered no provider type: is its hook marked @hookimpl and named register_secret_providers?"
    ]


def test_plugins_local_reports_what_this_environment_loads_as_json(tmp_path: Path) -> None:
    install_fake(tmp_path, "broken", "fake_cli_broken", BROKEN["raises at import"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "smtpconfig.cli", "plugins", "--local", "--json"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1  # a failed plugin is worth a non-zero exit
    report = {p["Name"]: p for p in json.loads(result.stdout)["Plugins"]}
    assert report["broken"]["State"] == "PLUGIN_STATE_FAILED"
    assert "plugin import blew up" in report["broken"]["Error"]
    assert report["exec"]["State"] == "PLUGIN_STATE_LOADED" and report["exec"]["ProviderTypes"] == ["exec"]
    assert report["exec"]["Builtin"] and report["file"]["Builtin"] is False

    # Without --local it asks the server; with none there, it says how to look without one.
    unreached = subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "plugins", "--target", f"unix:{tmp_path / 'absent.sock'}"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert unreached.returncode == 1 and unreached.stdout == ""
    assert unreached.stderr.rstrip().endswith("`smtpconfig plugins --local` shows what this environment would load")


def _plugins_cli(server: ServerProcess, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "plugins", *server.cli_args, *flags],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""},
    )


def _create_env_instance(server: ServerProcess) -> pb.CreateProviderResponse:
    with server.channel() as channel:
        return pb_grpc.SecretProviderServiceStub(channel).CreateProvider(pb.CreateProviderRequest(
            provider=pb.ProviderInstance(name="app-env", provider_type="env")), timeout=10)


def test_plugins_shows_the_servers_view_and_when_a_restart_is_needed(tmp_path: Path) -> None:
    """The CLI runs without the server's PYTHONPATH: what it prints is the server's view."""
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "broken", "fake_view_broken", BROKEN["raises at import"])
    base = short_dir()
    server = ServerProcess(base / "data", env={"PYTHONPATH": str(site), "SMTPCONFIG_PLUGINS_BLOCK": "exce"})
    try:
        server.start()
        assert "plugins_block names 'exce', which is not an installed plugin (did you mean 'exec'?)" in server.log()
        install_fake(site, "env", "fake_view_env", GOOD.replace("{type_name}", "env"))  # pip install, server up

        shown = _plugins_cli(server)
        assert shown.returncode == 1, shown.stderr  # a plugin failed
        lines = shown.stdout.splitlines()
        assert lines[0] == f"plugins of the server at {server.target}; plugins_strict off"
        assert any(re.match(r"broken +failed +entry point +fake_view_broken 0\.1", line) for line in lines)
        assert "RuntimeError: plugin import blew up" in shown.stdout
        at = next(i for i, line in enumerate(lines) if line.startswith("env "))
        assert re.match(r"env +not loaded +entry point +fake_view_env 0\.1 +types: -", lines[at])
        assert lines[at + 1].strip() == "installed since the server started: restart the server"
        assert "warning: plugins_block names 'exce', which is not an installed plugin (did you mean 'exec'?)" in lines
        assert lines[-1].startswith("plugins are loaded when the server starts: restart it")

        with pytest.raises(grpc.RpcError) as refused:
            _create_env_instance(server)
        assert violations(refused.value) == [(
            "ProviderType",
            "no provider type 'env' is installed (installed: exec, file, vault):"
            " plugin env: installed since the server started; restart the server to load it",
        )]

        server.terminate()
        server.start()
        report = json.loads(_plugins_cli(server, "--json").stdout)
        env_plugin = next(p for p in report["Plugins"] if p["Name"] == "env")
        assert env_plugin["State"] == "PLUGIN_STATE_LOADED" and env_plugin["ProviderTypes"] == ["env"]
        assert env_plugin["RestartReason"] == ""  # every field is printed, empty ones too
        assert _create_env_instance(server).provider.provider_type == "env"

        # An upgrade as pip does it: the old dist-info goes, a new one comes.
        shutil.rmtree(site / "fake_view_env-0.1.dist-info")
        upgraded = site / "fake_view_env-0.2.dist-info"
        upgraded.mkdir()
        (upgraded / "METADATA").write_text("Metadata-Version: 2.1\nName: fake_view_env\nVersion: 0.2\n")
        (upgraded / "entry_points.txt").write_text("[smtpconfig]\nenv = fake_view_env\n")
        report = json.loads(_plugins_cli(server, "--json").stdout)
        env_plugin = next(p for p in report["Plugins"] if p["Name"] == "env")
        assert env_plugin["Version"] == "0.1"
        assert env_plugin["RestartReason"] == "version 0.2 installed since the server started"
    finally:
        server.terminate()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("reason,line,says", [
    ("blocked", "SMTPCONFIG_PLUGINS_BLOCK=env", "plugin env is installed but plugins_block names it"),
    ("not allowed", "SMTPCONFIG_PLUGINS_ALLOW=file", "plugin env is installed but plugins_allow does not name it"),
    ("failed", "", "plugin env failed to load (RuntimeError: plugin import blew up); fix it and restart the server"),
    ("no such plugin", "", "a plugin installed after the server started loads when the server restarts;"
     " `smtpconfig plugins` shows what this server loaded and why any plugin failed"),
])
def test_an_unknown_provider_type_says_why_its_plugin_is_missing(tmp_path: Path, reason, line, says) -> None:
    source = BROKEN["raises at import"] if reason == "failed" else GOOD.replace("{type_name}", "env")
    if reason != "no such plugin":
        install_fake(tmp_path, "env", f"fake_missing_{reason.replace(' ', '_')}", source)
    env = {"PYTHONPATH": str(tmp_path), **dict([line.split("=")] if line else [])}
    base = short_dir()
    server = ServerProcess(base / "data", env=env)
    try:
        server.start()
        with pytest.raises(grpc.RpcError) as refused:
            _create_env_instance(server)
        [(field, description)] = violations(refused.value)
        assert field == "ProviderType" and description.endswith(says), description
    finally:
        server.terminate()
        shutil.rmtree(base, ignore_errors=True)


def test_server_starts_past_a_broken_plugin_but_strict_mode_refuses(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "broken", "fake_srv_broken", BROKEN["raises at import"])
    install_fake(site, "typo", "fake_srv_typo", BROKEN["misspelt hook"])
    env = {"PYTHONPATH": str(site)}
    base = short_dir()
    try:
        server = ServerProcess(base / "data", env=env).start()
        server.terminate()
        assert "plugin broken (fake_srv_broken) skipped: RuntimeError" in server.log()
        result = subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(base / "strict"), "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, env={**os.environ, **env, "SMTPCONFIG_PLUGINS_STRICT": "true"}, timeout=30,
        )
        # Every failure at once, not one per restart.
        assert result.returncode != 0
        assert "plugins_strict is on and 2 plugin(s) failed to load: broken (fake_srv_broken): RuntimeError:" in result.stderr
        assert "; typo (fake_srv_typo): PluginValidationError: unknown hook 'register_secret_provider';" in result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- instances declared in the config file ------------------------------------------------------


def _declared(tmp_path: Path, body: str, env: dict[str, str]):
    config = tmp_path / "smtpconfig.toml"
    config.write_text(textwrap.dedent(body))
    return load_settings(env=env, config_file=config)


def test_declared_instances_are_served_read_only(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "token").write_text("PLANTED-declared-token\n")
    settings = _declared(tmp_path, """
        [[providers]]
        id = 10
        name = "vendor"
        type = "exec"
        [providers.initialization]
        Command = '["/bin/echo", "{Name}"]'
        Token = { file = "token" }
        TtlSeconds = { env = "VENDOR_TTL" }
    """, {})
    monkeypatch.setenv("VENDOR_TTL", "30")
    data_dir = short_dir()
    server = ServerThread(data_dir, providers=settings.providers, exec_commands=(("/bin/true",),)).start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)
            shown = stub.GetProvider(pb.GetProviderRequest(id=10)).provider
            assert shown.source == pb.PROVIDER_SOURCE_CONFIG
            assert shown.initialization["Token"] == pb.InitializationValue(has_value=True)
            assert shown.initialization["TtlSeconds"].value == "30"
            for call in (
                lambda: stub.DeleteProvider(pb.DeleteProviderRequest(id=10)),
                lambda: stub.UpdateProvider(pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=10, name="x"))),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "config file" in refused.value.details()
            created = stub.CreateProvider(pb.CreateProviderRequest(provider=pb.ProviderInstance(
                name="api-made", provider_type="exec", initialization={"Command": pb.InitializationValue(value="/bin/true")})))
            assert created.provider.id == 11  # after the declared ones
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


BAD_DECLARATIONS = [
    ("secret as a literal", 'Token = "PLANTED-literal"', {}, "is a secret"),
    ("env var not set", 'Token = { env = "NOT_SET_ANYWHERE" }', {}, "not set"),
    ("file missing", 'Token = { file = "absent" }', {}, "No such file"),
    ("unknown parameter", 'Shell = "bash"', {}, "Initialization.Shell"),
]


@pytest.mark.parametrize("reason,line,env,says", BAD_DECLARATIONS, ids=[b[0] for b in BAD_DECLARATIONS])
def test_bad_declarations_stop_the_server_with_a_clear_message(tmp_path: Path, reason, line, env, says) -> None:
    settings = _declared(tmp_path, f"""
        [[providers]]
        id = 1
        name = "vendor"
        type = "exec"
        [providers.initialization]
        Command = "true"
        {line}
    """, env)
    data_dir = short_dir()
    try:
        with pytest.raises(Exception, match=says) as error:
            ServerThread(data_dir, providers=settings.providers).start()
        assert "PLANTED-literal" not in str(error.value)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize("body,says", [
    ("[[providers]]\nname = 'x'\ntype = 'exec'\n", "id must be a positive integer"),
    ("[[providers]]\nid = 1\ntype = 'exec'\n", "name is required"),
    ("[[providers]]\nid = 1\nname = 'x'\ntype = 'exec'\ncolour = 'red'\n", "unknown keys colour"),
    ("[[providers]]\nid = 1\nname = 'x'\ntype = 'exec'\n[[providers]]\nid = 1\nname = 'y'\ntype = 'exec'\n", "share an id"),
    ("[[providers]]\nid = 1\nname = 'x'\ntype = 'exec'\n[providers.initialization]\nToken = { vault = 'x' }\n", "env"),
])
def test_declaration_shape_is_checked_with_the_settings(tmp_path: Path, body: str, says: str) -> None:
    from smtpconfig.settings import SettingsError

    with pytest.raises(SettingsError, match=says):
        _declared(tmp_path, body, {})


# --- a plugin's bug, as its author reads it -----------------------------------------------------

BUGGY = """
from smtpconfig.plugin import Parameter, Resolved, Secret, SecretProvider, hookimpl

class Buggy(SecretProvider):
    name = "buggy"
    parameters = (
        Parameter("Token", kind="secret", description="API token"),
        Parameter("Name", instance_level=True, description="which secret"),
    )
    def resolve(self, instance_parameters, initialization):
        return Resolved(Secret(parse_answer(instance_parameters["Name"], initialization["Token"].reveal())))

def parse_answer(name, token):
    raise ValueError(f"no field {name!r} in the answer to token {token}")

@hookimpl
def register_secret_providers(register):
    register(Buggy)
"""
BUGGY_TOKEN = "PLANTED-buggy-token-7c1e"


@pytest.mark.parametrize("level", ["debug", "info"])
def test_a_plugin_bug_is_logged_with_its_message_and_at_debug_its_traceback(tmp_path: Path, level: str) -> None:
    install_fake(tmp_path, "buggy", "fake_buggy", BUGGY)
    base = short_dir()
    server = ServerProcess(base / "data", "--log-level", level, env={"PYTHONPATH": str(tmp_path)})
    try:
        server.start()
        with server.channel() as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)
            created = stub.CreateProvider(pb.CreateProviderRequest(provider=pb.ProviderInstance(
                name="buggy", provider_type="buggy", initialization={"Token": pb.InitializationValue(value=BUGGY_TOKEN)})))
            with pytest.raises(grpc.RpcError) as failed:
                stub.CheckSecret(pb.CheckSecretRequest(
                    secret=secret_pb2.SecretObject(provider=created.provider.id, parameters={"Name": "smtp"})))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert failed.value.details() == (
            "provider 1 (buggy, buggy) failed (ValueError), a bug in the provider: the server log has the"
            " message, and its traceback at log_level debug"
        )
        log = server.log()
        assert (
            "provider 1 (buggy, buggy) raised ValueError while resolving {Name=smtp}:"
            " no field 'smtp' in the answer to token **********"
        ) in log
        traced = "Traceback (most recent call last):" in log and ", in parse_answer" in log
        assert traced == (level == "debug")
        if level == "debug":
            assert "    raise ValueError(f\"no field {name!r} in the answer to token {token}\")" in log
            assert "ValueError: no field 'smtp' in the answer to token **********" in log
        assert BUGGY_TOKEN not in log and BUGGY_TOKEN not in failed.value.details()
    finally:
        server.terminate()
        shutil.rmtree(base, ignore_errors=True)
