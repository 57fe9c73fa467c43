"""`providers:modify` is not root on the host (issue 9, section 2).

Every attack runs through the real gRPC API of a real server, as `mallory`, an identity that holds
only ``providers:modify`` and ``providers:read``. The operator's settings (`exec_commands`,
`file_directories`, `path_directories`) are what allows an instance anything; the server's own
files are never reachable; a changed destination drops the stored secrets. Where an attack would
send something out, a listener started by the test proves nothing reached it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from smtpconfig.api.auth import token_hash
from smtpconfig.plugin import Parameter
from smtpconfig.settings import SettingsError, load
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.openbao import OpenBao
from tests.kits.pluginkit import install_fake
from tests.kits.support import ServerProcess, ServerThread, short_dir, token_channel, violations

MALLORY_TOKEN = "mallory-token-3c9d0e"
MALLORY = {
    "tokens": (("mallory", token_hash(MALLORY_TOKEN)),),
    "policy": (("mallory", ("providers:modify", "providers:read")),),
}
PLANTED = "PLANTED-host-reach-value-81b2"


@pytest.fixture
def base() -> Iterator[Path]:
    directory = short_dir("screach")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Reach:
    """A server started with `settings`, and mallory's stub."""

    def __init__(self, base: Path, **settings) -> None:
        self.data_dir = base / "data"
        self.server = ServerThread(self.data_dir, **MALLORY, **settings).start()
        self._channel = token_channel(self.server.target, MALLORY_TOKEN)
        self.stub = pb_grpc.SecretProviderServiceStub(self._channel)
        self._closed = False

    def create(self, type_name: str, name: str = "attempt", **init: str) -> pb.ProviderInstance:
        instance = pb.ProviderInstance(name=name, provider_type=type_name)
        for key, value in init.items():
            instance.initialization[key].value = value
        return self.stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider

    def update(self, provider: pb.ProviderInstance, **init: str) -> pb.ProviderInstance:
        request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=provider.id))
        for key, value in init.items():
            request.provider.initialization[key].value = value
        request.update_mask.paths.append("Initialization")
        return self.stub.UpdateProvider(request).provider

    def check(self, provider: int, **params: str) -> pb.CheckSecretResponse:
        return self.stub.CheckSecret(pb.CheckSecretRequest(secret=secret_pb2.SecretObject(provider=provider, parameters=params)))

    def stored(self) -> list[pb.ProviderInstance]:
        return list(self.stub.ListProviders(pb.ListProvidersRequest()).providers)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()
            self.server.stop()


@pytest.fixture
def reach(base: Path):
    started: list[Reach] = []

    def start(**settings) -> Reach:
        started.append(Reach(base, **settings))
        return started[-1]

    yield start
    for server in started:
        server.close()


def refused(call, field: str) -> str:
    """Run `call`, expect INVALID_ARGUMENT naming `field`; return what it says about that field."""
    with pytest.raises(grpc.RpcError) as failure:
        call()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
    said = [d for f, d in violations(failure.value) if f == field]
    assert said, violations(failure.value)
    return said[0]


def script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\nimport os, sys\n{body}\n")
    path.chmod(0o755)
    return str(path)


# --- exec: commands --------------------------------------------------------------------------------


def test_exec_runs_nothing_that_exec_commands_does_not_list(base: Path, reach) -> None:
    witness = base / "ran"
    attack = json.dumps(["/bin/sh", "-c", f"touch {witness}; echo x"])
    nothing = reach()
    said = refused(lambda: nothing.create("exec", Command=attack), "Initialization.Command")
    assert "exec_commands in the server's config lists no command" in said  # which setting allows it
    assert nothing.stored() == []
    nothing.close()

    vendor = script(base / "vendor-cli", f'print("{PLANTED}-" + sys.argv[-1])')
    narrow = reach(exec_commands=((vendor, "get"), ("/usr/bin/env", "vendor")))
    for command in (
        attack,
        json.dumps([vendor, "put", "{Name}"]),  # the listed program with other fixed arguments
        json.dumps([vendor]),  # shorter than the listed prefix
        f"{vendor}x get {{Name}}",  # a look-alike path
        json.dumps(["/usr/bin/env", "sh", "-c", "id"]),  # a listed program, its fixed argument changed
    ):
        said = refused(lambda command=command: narrow.create("exec", Command=command), "Initialization.Command")
        assert "exec_commands" in said and vendor in said  # it says what may be picked
    assert narrow.stored() == [] and not witness.exists()

    # The API picks a listed command; the trailing arguments are the instance's, in either syntax.
    for i, command in enumerate((json.dumps([vendor, "get", "--verbose", "{Name}"]), f"{vendor} get {{Name}}")):
        made = narrow.create("exec", name=f"vendor-{i}", Command=command)
        got = narrow.check(made.id, Name="db")
        assert got.success and got.fingerprint == narrow.check(made.id, Name="db").fingerprint
    assert not witness.exists()
    # The Token given to one command does not follow a switch to another listed one.
    vendor_made = narrow.create("exec", name="with-token", Command=f"{vendor} get", Token="PLANTED-exec-token")
    said = refused(lambda: narrow.update(vendor_made, Command="/usr/bin/env vendor"), "Initialization.Token")
    assert "Command changed" in said


def test_exec_environment_cannot_change_what_code_runs(base: Path, reach) -> None:
    vendor = script(base / "vendor-cli", 'print(os.environ.get("VENDOR_URL", "none"))')
    attacks = ({"LD_PRELOAD": "/tmp/evil.so"}, {"PATH": "/tmp"}, {"PYTHONPATH": "/tmp"},
               {"BASH_ENV": "/tmp/x"}, {"ld_library_path": "/tmp"}, {"NODE_OPTIONS": "--require /tmp/x"})
    # Listed or not: loading settings refuses such a list, and the host refuses the names anyway.
    server = reach(exec_commands=((vendor,),), exec_environment=("VENDOR_URL", *(next(iter(a)) for a in attacks)))
    for variables in attacks:
        said = refused(lambda variables=variables: server.create("exec", Command=vendor, Environment=json.dumps(variables)),
                       "Initialization.Environment")
        assert next(iter(variables)) in said and "what code a program loads" in said
    made = server.create("exec", Command=vendor, Environment=json.dumps({"VENDOR_URL": "https://pam.example"}))
    assert server.check(made.id, Name="db").success
    # A masked update cannot slip one in later either.
    refused(lambda: server.update(made, Environment=json.dumps({"LD_PRELOAD": "/tmp/evil.so"})),
            "Initialization.Environment")


def test_exec_environment_sets_only_what_exec_environment_lists(base: Path, reach) -> None:
    # A vault-like CLI: it would send the server user's own token wherever VAULT_ADDR points.
    seen = base / "seen"
    vendor = script(base / "vendor-cli", f'import json\nopen({str(seen)!r}, "w").write(json.dumps(dict(os.environ)))\n'
                                          'print("value")')
    attacks = ({"VAULT_ADDR": "https://127.0.0.1:1"}, {"HTTPS_PROXY": "http://127.0.0.1:1"},
               {"SSL_CERT_FILE": "/tmp/ca.pem"}, {"vendor_profile": "other"})
    nothing = reach(exec_commands=((vendor,),))
    for variables in attacks:
        said = refused(lambda variables=variables: nothing.create("exec", Command=vendor, Environment=json.dumps(variables)),
                       "Initialization.Environment")
        assert next(iter(variables)) in said and "exec_environment" in said  # which setting would allow it
    assert nothing.stored() == []
    nothing.close()

    listed = reach(exec_commands=((vendor,),), exec_environment=("VENDOR_PROFILE", "VENDOR_REGION"))
    for variables in attacks:  # a listed name does not open others, nor itself in another case
        said = refused(lambda variables=variables: listed.create("exec", Command=vendor, Environment=json.dumps(
            {"VENDOR_PROFILE": "smtp", **variables})), "Initialization.Environment")
        assert next(iter(variables)) in said and "VENDOR_PROFILE" not in said
    assert listed.stored() == [] and not seen.exists()
    # A lone surrogate (JSON's "\ud800") is no text an environment can carry: refused when written.
    said = refused(lambda: listed.create("exec", Command=vendor, Environment='{"VENDOR_PROFILE": "\\ud800"}'),
                   "Initialization.Environment")
    assert "text only" in said
    made = listed.create("exec", Command=vendor, Environment=json.dumps({"VENDOR_PROFILE": "smtp"}))
    assert listed.check(made.id, Name="db").success
    assert json.loads(seen.read_text())["VENDOR_PROFILE"] == "smtp"  # the command saw it
    refused(lambda: listed.update(made, Environment=json.dumps({"VAULT_ADDR": "https://127.0.0.1:1"})),
            "Initialization.Environment")
    assert "VAULT_ADDR" not in json.loads(seen.read_text())

    # The operator takes the name off the list and restarts: the stored instance no longer runs.
    seen.unlink()
    listed.close()
    narrowed = reach(exec_commands=((vendor,),), exec_environment=("VENDOR_REGION",))
    with pytest.raises(grpc.RpcError) as shrunk:
        narrowed.check(made.id, Name="db")
    assert shrunk.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exec_environment" in shrunk.value.details() and not seen.exists()


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONSTARTUP", "SMTPCONFIG_INIT_TOKEN"])
def test_the_operator_cannot_list_a_variable_that_decides_what_code_runs(base: Path, name: str) -> None:
    config = base / "smtpconfig.toml"
    config.write_text(f'exec_environment = ["VENDOR_URL", "{name}"]\n')
    with pytest.raises(SettingsError, match=f"exec_environment.*{name}"):
        load(config_file=config, env={})
    with pytest.raises(SettingsError, match=f"exec_environment.*{name}"):
        load(env={"SMTPCONFIG_EXEC_ENVIRONMENT": f"VENDOR_URL:{name}"})
    assert load(env={"SMTPCONFIG_EXEC_ENVIRONMENT": "VENDOR_URL:VAULT_NAMESPACE, AWS_PROFILE"}).exec_environment == (
        "VENDOR_URL", "VAULT_NAMESPACE", "AWS_PROFILE")


def test_exec_working_directory_is_a_path_parameter(base: Path, reach) -> None:
    vendor = script(base / "vendor-cli", 'print(os.getcwd())')
    (base / "work").mkdir()
    server = reach(exec_commands=((vendor,),), path_directories=(base / "work",))
    said = refused(lambda: server.create("exec", Command=vendor, WorkingDirectory=str(server.data_dir)),
                   "Initialization.WorkingDirectory")
    assert "data directory" in said
    said = refused(lambda: server.create("exec", Command=vendor, WorkingDirectory="/etc"), "Initialization.WorkingDirectory")
    assert "path_directories" in said
    assert server.check(server.create("exec", Command=vendor, WorkingDirectory=str(base / "work")).id, Name="x").success


# --- file: directories -----------------------------------------------------------------------------


def test_file_never_reads_the_servers_own_files_even_when_everything_is_listed(base: Path, reach) -> None:
    server = reach(file_directories=(Path("/"),))
    link = base / "innocent"
    link.symlink_to(server.data_dir)
    for directory, says in (
        ("/", "data directory"),  # holds the data directory
        (str(base), "data directory"),
        (str(server.data_dir), "data directory"),
        (str(link), "data directory"),  # a symlink to it
        ("/proc/self", "/proc"),  # /proc/self/environ would show SMTPCONFIG_KEY
        ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
        ("relative/dir", "absolute"),
    ):
        said = refused(lambda directory=directory: server.create("file", Directory=directory), "Initialization.Directory")
        assert says in said, (directory, said)
    assert server.stored() == []


def test_file_reads_only_under_file_directories(base: Path, reach) -> None:
    allowed, other = base / "secrets", base / "other"
    allowed.mkdir()
    other.mkdir()
    (allowed / "smtp-password").write_text(PLANTED + "\n")
    server = reach(file_directories=(allowed,), path_directories=(other,))
    said = refused(lambda: server.create("file", Directory=str(other)), "Initialization.Directory")
    assert "file_directories" in said  # path_directories is for other providers' paths
    refused(lambda: server.create("file", Directory=str(allowed / ".." / "other")), "Initialization.Directory")

    made = server.create("file", Directory=str(allowed))
    assert server.check(made.id, File="smtp-password").success
    # A link inside the allowed directory to the key file is still refused by the provider.
    (allowed / "key").symlink_to(server.data_dir / "secret.key")
    with pytest.raises(grpc.RpcError) as out:
        server.check(made.id, File="key")
    assert out.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outside Directory" in out.value.details()


def test_resolution_checks_again_when_a_symlink_moves_or_settings_shrink(base: Path, reach) -> None:
    allowed = base / "secrets"
    (allowed / "v1").mkdir(parents=True)
    (allowed / "v1" / "smtp-password").write_text(PLANTED)
    current = allowed / "current"
    current.symlink_to(allowed / "v1")
    server = reach(file_directories=(allowed,))
    made = server.create("file", Directory=str(current))
    assert server.check(made.id, File="smtp-password").success

    # Someone re-points the link at the data directory: the next resolution is refused.
    current.unlink()
    current.symlink_to(server.data_dir)
    with pytest.raises(grpc.RpcError) as moved:
        server.check(made.id, File="secret.key")
    assert moved.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"provider instance {made.id}" in moved.value.details() and "data directory" in moved.value.details()

    # The operator narrows the list and restarts: the stored instance no longer resolves.
    current.unlink()
    current.symlink_to(allowed / "v1")
    server.close()
    narrowed = reach(file_directories=(base / "elsewhere",))
    with pytest.raises(grpc.RpcError) as shrunk:
        narrowed.check(made.id, File="smtp-password")
    assert shrunk.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "file_directories" in shrunk.value.details()


def test_a_listed_directory_means_what_it_held_when_the_server_started(base: Path, reach) -> None:
    # The operator lists a symlink; someone who can re-point it later does not widen the list.
    for name in ("v1", "elsewhere"):
        (base / name).mkdir()
        (base / name / "smtp-password").write_text(PLANTED)
    listed = base / "listed"
    listed.symlink_to(base / "v1")
    server = reach(file_directories=(listed,))
    assert server.check(server.create("file", name="v1", Directory=str(listed)).id, File="smtp-password").success
    listed.unlink()
    listed.symlink_to(base / "elsewhere")
    for directory in (listed, base / "elsewhere"):
        assert "file_directories" in refused(lambda directory=directory: server.create("file", Directory=str(directory)),
                                             "Initialization.Directory")


def test_paths_are_checked_as_given_and_declared_secret_files_stay_out_of_reach(base: Path, reach) -> None:
    allowed = base / "secrets"
    (allowed / "app").mkdir(parents=True)
    (allowed / "vault-token").write_text("PLANTED-declared-token")
    declared = {"id": 9, "name": "ops-vault", "type": "exec",
                "initialization": {"Command": "/bin/true", "Token": {"file": str(allowed / "vault-token")}}}
    server = reach(file_directories=(allowed,), providers=(declared,))
    # The operator's own secret file sits in the listed directory: still not the API's to read.
    said = refused(lambda: server.create("file", Directory=str(allowed)), "Initialization.Directory")
    assert "declared" in said
    # A provider that strips white space would open the parent of what was checked.
    said = refused(lambda: server.create("file", Directory=f"{allowed}/app/.. "), "Initialization.Directory")
    assert "white space" in said
    assert server.create("file", Directory=str(allowed / "app")).id


# --- vault: paths and destinations -----------------------------------------------------------------


class Listener:
    """An HTTP server on loopback that records every request and answers 403."""

    def __init__(self) -> None:
        seen = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen.append((self.command, self.path, str(self.headers), self.rfile.read(length)))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def saw(self, text: str) -> bool:
        return any(text in headers or text.encode() in body for _, _, headers, body in self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def vault_admin(server: Reach, **init: str) -> pb.ProviderInstance:
    """An instance the admin made (with a secret mallory never sees)."""
    with server.server.channel() as channel:
        instance = pb.ProviderInstance(name="bao", provider_type="vault")
        for key, value in init.items():
            instance.initialization[key].value = value
        return pb_grpc.SecretProviderServiceStub(channel).CreateProvider(pb.CreateProviderRequest(provider=instance)).provider


def test_jwt_file_cannot_point_at_the_admin_token(base: Path, reach, openbao_server: OpenBao, listener: Listener) -> None:
    bao = openbao_server
    bao.write_policy("reach-reader", 'path "secret/data/reach/*" { capabilities = ["read"] }')
    bao.kv_put("secret", "reach/relay", {"password": PLANTED})
    issuer = bao.create_jwt_role("reach", ["reach-reader"], mount="jwt-reach")
    jwt_dir = base / "jwt"
    jwt_dir.mkdir()
    (jwt_dir / "token").write_text(issuer.mint())
    # Even a list that holds the data directory's parent never reaches into the data directory.
    server = reach(path_directories=(jwt_dir, base))
    made = server.create("vault", Host=bao.address, AuthMethod="jwt", AuthMount="jwt-reach", Role="reach",
                         JwtFile=str(jwt_dir / "token"))
    assert server.check(made.id, Secret="reach/relay", Key="password").success

    admin_token = server.server.token_path
    said = refused(lambda: server.update(made, JwtFile=str(admin_token)), "Initialization.JwtFile")
    assert "data directory" in said
    refused(lambda: server.update(made, Host=listener.url, JwtFile=str(admin_token)), "Initialization.JwtFile")
    said = refused(lambda: server.update(made, JwtFile="/etc/hostname"), "Initialization.JwtFile")
    assert "path_directories" in said
    # Nothing changed: resolutions still log in with the allowed file, and the listener saw nothing.
    assert server.check(made.id, Secret="reach/relay", Key="password").success
    assert listener.requests == []
    assert not listener.saw(admin_token.read_text().strip())


def test_ca_bundle_must_be_under_path_directories(base: Path, reach, openbao_server: OpenBao) -> None:
    cas = base / "cas"
    cas.mkdir()
    shutil.copy(openbao_server.ca_file, cas / "bao.pem")
    server = reach(path_directories=(cas,))
    said = refused(lambda: server.create("vault", Host=openbao_server.tls_address, Token="t",
                                         CaBundle="/etc/ssl/certs/ca-certificates.crt"), "Initialization.CaBundle")
    assert "path_directories" in said
    made = server.create("vault", Host=openbao_server.tls_address, Token=openbao_server.root_token,
                         CaBundle=str(cas / "bao.pem"))
    openbao_server.kv_put("secret", "reach/tls", {"password": PLANTED})
    assert server.check(made.id, Secret="reach/tls", Key="password").success


def test_a_new_host_never_receives_the_stored_token(reach, openbao_server: OpenBao, listener: Listener) -> None:
    server = reach()
    root = openbao_server.root_token
    made = vault_admin(server, Host=openbao_server.address, Token=root)

    # Masked: only Host is sent, so the stored Token would follow it. Refused, nothing stored.
    said = refused(lambda: server.update(made, Host=listener.url), "Initialization.Token")
    assert "Host changed" in said and "sent again" in said
    # Without a mask the same; aliases of Host count as Host.
    request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=made.id, name="bao"))
    request.provider.initialization["Url"].value = listener.url
    refused(lambda: server.stub.UpdateProvider(request), "Initialization.Token")
    # Other parameters that aim the token elsewhere bind it too.
    for moved in ({"Namespace": "other"}, {"AuthMount": "elsewhere"}):
        refused(lambda moved=moved: server.update(made, **moved), "Initialization.Token")
    assert [p.etag for p in server.stored()] == [made.etag]
    openbao_server.kv_put("secret", "reach/host", {"password": PLANTED})
    assert server.check(made.id, Secret="reach/host", Key="password").success  # still the admin's Vault

    # Changing only what does not bind keeps the token, as before.
    kept = server.update(made, TtlSeconds="30")
    assert kept.initialization["Token"].has_value
    # Sending a token of one's own with the new host is fine: the listener gets that, never root's.
    server.update(kept, Host=listener.url, Token="mallory-own-token")
    with pytest.raises(grpc.RpcError):
        server.check(made.id, Secret="reach/host", Key="password")
    assert listener.saw("mallory-own-token") and not listener.saw(root)


# --- third-party providers and declared instances --------------------------------------------------

NOTES = """
import os
from smtpconfig.plugin import Parameter, Resolved, Secret, SecretProvider, hookimpl

class Notes(SecretProvider):
    name = "notes"
    parameters = (
        Parameter("Folder", kind="path"),
        Parameter("Note", instance_level=True),
    )

    def resolve(self, instance_parameters, initialization):
        with open(os.path.join(initialization["Folder"], instance_parameters["Note"])) as f:
            return Resolved(Secret(f.read()))

@hookimpl
def register_secret_providers(register):
    register(Notes)
"""


def test_a_third_party_path_parameter_gets_the_same_guard(base: Path) -> None:
    site, notes = base / "site", base / "notes"
    site.mkdir()
    notes.mkdir()
    (notes / "smtp").write_text(PLANTED)
    install_fake(site, "notes", "reach_notes_plugin", NOTES)
    config = base / "smtpconfig.toml"
    config.write_text(f"""
path_directories = ["{notes}"]
[[tokens]]
identity = "mallory"
sha256 = "{token_hash(MALLORY_TOKEN)}"
[policy]
mallory = ["providers:modify", "providers:read"]
""")
    server = ServerProcess(base / "data", env={"PYTHONPATH": str(site), "SMTPCONFIG_CONFIG": str(config)}).start()
    try:
        with token_channel(server.target, MALLORY_TOKEN) as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)

            def create(folder: str) -> pb.ProviderInstance:
                instance = pb.ProviderInstance(name=os.path.basename(folder) or "root", provider_type="notes")
                instance.initialization["Folder"].value = folder
                return stub.CreateProvider(pb.CreateProviderRequest(provider=instance)).provider

            assert "data directory" in refused(lambda: create(str(server.data_dir)), "Initialization.Folder")
            assert "path_directories" in refused(lambda: create("/etc"), "Initialization.Folder")
            made = create(str(notes))
            check = stub.CheckSecret(pb.CheckSecretRequest(
                secret=secret_pb2.SecretObject(provider=made.id, parameters={"Note": "smtp"})))
            assert check.success
    finally:
        server.terminate()
    assert PLANTED not in server.log()


def test_declared_instances_are_the_operators_own(base: Path) -> None:
    # Nothing is listed, yet the operator's declared exec instance runs a shell.
    table = {"id": 3, "name": "ops", "type": "exec",
             "initialization": {"Command": json.dumps(["/bin/sh", "-c", f"echo {PLANTED}"])}}
    server = ServerThread(base / "data", providers=(table,)).start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.SecretProviderServiceStub(channel)
            assert stub.CheckSecret(pb.CheckSecretRequest(
                secret=secret_pb2.SecretObject(provider=3, parameters={"Name": "x"}))).success
    finally:
        server.stop()
    # ...but not even a declared instance reads the data directory: the server refuses to start.
    reads_data = {"id": 4, "name": "oops", "type": "file", "initialization": {"Directory": str(base)}}
    with pytest.raises(Exception, match="reaches the data directory"):
        ServerThread(base / "data", providers=(reads_data,)).start()


# --- the plugin API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"kind": "destination"}, "kind must be one of"),
        ({"kind": "path", "instance_level": True}, "only initialization parameters"),
        ({"kind": "command", "instance_level": True}, "only initialization parameters"),
        ({"kind": "url", "instance_level": True}, "only initialization parameters"),
        ({"kind": "environment", "instance_level": True}, "only initialization parameters"),
    ],
)
def test_parameter_kinds_are_checked_when_a_plugin_declares_them(given: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Parameter("X", **given)


def test_destinations_commands_and_environments_always_bind_secrets() -> None:
    assert [Parameter("X", kind=k).binds_secrets for k in ("url", "command", "environment")] == [True] * 3
    assert not Parameter("X", kind="path").binds_secrets and Parameter("X", kind="path", binds_secrets=True).binds_secrets
