"""Loading plugins: entry points, broken plugins reported and skipped, strict mode, allow/block
lists, and provider instances declared in the config file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from service.plugin_manager import PluginError, load_plugins
from service.settings import load as load_settings
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.support import ServerProcess, ServerThread, short_dir

GOOD = """
from service.plugin import Resolved, Secret, SecretProvider, Parameter, hookimpl

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
    "misspelt hook": "from service.plugin import hookimpl\n\n@hookimpl\ndef register_secret_provider(register):\n    pass\n",
    "registers a non-provider": "from service.plugin import hookimpl\n\n@hookimpl\ndef register_secret_providers(register):\n    register(dict)\n",
    "registers a taken type name": GOOD.replace("{type_name}", "exec"),
    "hook raises": "from service.plugin import hookimpl\n\n@hookimpl\ndef register_secret_providers(register):\n    raise ValueError('no')\n",
}
SAYS = {
    "raises at import": "RuntimeError: plugin import blew up",
    "misspelt hook": "unknown hook",
    "registers a non-provider": "not a subclass",
    "registers a taken type name": "already registered by plugin exec",
    "hook raises": "ValueError: no",
}


def install_fake(site: Path, entry: str, module: str, source: str) -> None:
    """A distribution in `site` as pip would leave it: module, METADATA and entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[smtpconfig]\n{entry} = {module}\n")


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_plugin_is_reported_and_skipped(tmp_path: Path, monkeypatch, case: str) -> None:
    module = f"fake_{case.replace(' ', '_').replace('-', '_')}"
    install_fake(tmp_path, "fake", module, BROKEN[case])
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins()
    status = next(s for s in loaded.report if s.name == "fake")
    assert status.status == "failed"
    assert SAYS[case] in status.error
    assert {"exec", "inline"} <= loaded.provider_types.keys()  # the others are untouched
    assert loaded.provider_types["exec"].plugin == "exec"
    with pytest.raises(PluginError, match="plugin fake"):
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


def test_plugins_command_reports_as_json(tmp_path: Path) -> None:
    install_fake(tmp_path, "broken", "fake_cli_broken", BROKEN["raises at import"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "service.cli", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert result.returncode == 1  # a failed plugin is worth a non-zero exit
    report = {p["Name"]: p for p in json.loads(result.stdout)}  # PascalCase, as provider messages
    assert report["broken"]["Status"] == "failed" and "plugin import blew up" in report["broken"]["Error"]
    assert report["exec"]["Status"] == "loaded" and report["exec"]["ProviderTypes"] == ["exec"]
    assert report["file"]["Source"] == "entry point"


def test_server_starts_past_a_broken_plugin_but_strict_mode_refuses(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "broken", "fake_srv_broken", BROKEN["raises at import"])
    env = {"PYTHONPATH": str(site)}
    base = short_dir()
    try:
        server = ServerProcess(base / "data", env=env).start()
        server.terminate()
        assert "plugin broken (fake_srv_broken) skipped: RuntimeError" in server.log()
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(base / "strict"), "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, env={**os.environ, **env, "SMTPCONFIG_PLUGINS_STRICT": "true"}, timeout=30,
        )
        assert result.returncode != 0 and "plugin broken" in result.stderr
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
    from service.settings import SettingsError

    with pytest.raises(SettingsError, match=says):
        _declared(tmp_path, body, {})
