"""TLS on the TCP listeners and the Unix socket's access boundary, against real servers.

Client certificates are checked in the handshake; the server certificate is replaced on disk and
served from the next connection on, without a restart, while a broken replacement is not served;
server-side TLS needs a bearer token; settings refuse unsafe transports; the socket file gets the
mode and group it is configured with.
"""

from __future__ import annotations

import ctypes
import grp
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.settings import SettingsError, load
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.support import ServerThread, short_dir, token_channel, wait_serving
from tests.kits.testca import CertPaths, TestCA, self_signed

LOCAL_ONLY = (("grpc.use_local_subchannel_pool", 1),)  # a connection of its own per channel


@pytest.fixture
def root() -> Iterator[Path]:
    directory = short_dir("tls")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def port_of(server: ServerThread) -> int:
    (port,) = server.app.ports.values()
    return port


def credentials(ca: Path, client: CertPaths | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca.read_bytes())
    return grpc.ssl_channel_credentials(ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())


def list_providers(channel: grpc.Channel) -> grpc.StatusCode:
    """The status of one call that needs an identity (providers:read)."""
    try:
        pb_grpc.SecretProviderServiceStub(channel).ListProviders(pb.ListProvidersRequest(), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def served_serial(port: int) -> int:
    """The serial number of the certificate the server presents to a new TLS connection (ALPN h2,
    as gRPC clients offer it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only look at what is presented
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            assert tls.selected_alpn_protocol() == "h2"
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def replace(path: Path, content: bytes) -> None:
    """Write `content` to `path` the way deploy tools do: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(content)
    os.replace(temporary, path)


# --- client certificates ------------------------------------------------------------------------


def _foreign_client(root: Path, ca: TestCA) -> CertPaths:
    return TestCA(root / "foreign", name="another CA").issue_client("client", "client", uris=("spiffe://test/ns/x",))


REFUSED_CLIENTS = {
    "from another CA": _foreign_client,
    "self-signed": lambda root, ca: self_signed(root / "self", "client", sans=("client.test",)),
    # Signed by the right CA, but for serverAuth only: not a client certificate.
    "server certificate": lambda root, ca: ca.issue("not-a-client", ("client.test",)),
}


@pytest.mark.parametrize("case", REFUSED_CLIENTS)
def test_a_client_certificate_the_ca_did_not_issue_for_clients_fails_the_handshake(
    root: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpconfig")
    ca = TestCA(root / "ca")
    server_cert = ca.issue("server")
    good = ca.issue_client("good", "good", uris=("spiffe://test/ns/x",))
    bad = REFUSED_CLIENTS[case](root, ca)
    server = ServerThread(
        root / "data", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
        policy=(("spiffe://test/ns/x", ("providers:read",)), ("cn:client", ("providers:read",))),
    ).start()
    try:
        with grpc.secure_channel(server.target, credentials(ca.path, bad), options=LOCAL_ONLY) as channel:
            assert list_providers(channel) == grpc.StatusCode.UNAVAILABLE
        # The server is still up and serving callers with a good certificate.
        with grpc.secure_channel(server.target, credentials(ca.path, good), options=LOCAL_ONLY) as channel:
            assert list_providers(channel) == grpc.StatusCode.OK
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()
    text = caplog.text
    assert server.token not in text
    assert "PRIVATE KEY" not in text


def test_a_certificate_name_with_bidirectional_controls_is_no_identity(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "reader\u202e" shows as "reader" in a log line or an audit record; the policy could never
    # name it (settings refuse such identities), so the caller is not identified at all.
    caplog.set_level(logging.DEBUG, logger="smtpconfig")
    ca = TestCA(root / "ca")
    server_cert = ca.issue("server")
    spoof = ca.issue_client("spoof", "reader\u202e")  # a CN and no SANs: the CN is its only name
    server = ServerThread(
        root / "data", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=ca.path,
        policy=(("cn:reader", ("providers:read",)),),
    ).start()
    try:
        with grpc.secure_channel(server.target, credentials(ca.path, spoof), options=LOCAL_ONLY) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.SecretProviderServiceStub(channel).ListProviders(pb.ListProvidersRequest(), timeout=10)
    finally:
        server.stop()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "the client certificate's names must not contain bidirectional control" in refused.value.details()
    assert "\u202e" not in caplog.text


# --- certificate replacement --------------------------------------------------------------------


def test_a_replaced_server_certificate_is_served_without_a_restart(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpconfig")
    first_ca, second_ca = TestCA(root / "first", name="first CA"), TestCA(root / "second", name="second CA")
    first, second = first_ca.issue("server"), second_ca.issue("server")
    live = root / "live"
    live.mkdir()
    cert, key = live / "tls.crt", live / "tls.key"
    replace(cert, first.cert.read_bytes())
    replace(key, first.key.read_bytes())
    server = ServerThread(root / "data", tls_cert_file=cert, tls_key_file=key).start()
    port = port_of(server)

    def call(ca: Path) -> grpc.StatusCode:
        with token_channel(server.target, server.token, grpc.ssl_channel_credentials(ca.read_bytes())) as channel:
            return list_providers(channel)

    try:
        assert served_serial(port) == serial_of(first.cert)
        # A connection made now keeps its certificate after the switch.
        kept = token_channel(server.target, server.token, credentials(first_ca.path))
        assert list_providers(kept) == grpc.StatusCode.OK

        broken = [
            ("a new certificate beside the old key", cert, second.cert.read_bytes()),
            ("a half-written key", key, second.key.read_bytes()[: len(second.key.read_bytes()) // 2]),
        ]
        for why, path, content in broken:
            replace(path, content)
            for _ in range(2):  # several handshakes: still the old certificate, one warning
                assert served_serial(port) == serial_of(first.cert), why
                assert call(first_ca.path) == grpc.StatusCode.OK, why
        key.unlink()
        for _ in range(2):
            assert served_serial(port) == serial_of(first.cert), "a missing key file"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "smtpconfig.api.tls"]
        assert len(warnings) == 3, [r.getMessage() for r in warnings]
        assert "does not belong to the certificate" in warnings[0].getMessage()
        assert server.app.certificates is not None and server.app.certificates.reloads == 0

        replace(key, second.key.read_bytes())  # the pair is whole again
        assert served_serial(port) == serial_of(second.cert)
        assert call(second_ca.path) == grpc.StatusCode.OK
        assert call(first_ca.path) == grpc.StatusCode.UNAVAILABLE  # new connections: new certificate
        assert list_providers(kept) == grpc.StatusCode.OK  # the existing connection goes on
        kept.close()
        assert server.app.certificates.reloads == 1
        assert "TLS certificates reloaded: now serving CN=localhost" in caplog.text
    finally:
        server.stop()
    assert "PRIVATE KEY" not in caplog.text and server.token not in caplog.text


def test_a_kubernetes_style_symlink_swap_is_picked_up(root: Path) -> None:
    """A mounted secret: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/, updated by
    swapping the ..data link in one rename."""
    ca = TestCA(root / "ca")
    live = root / "secret"
    live.mkdir()
    versions = {}
    for n in (1, 2):
        version = live / f"..2026_{n}"
        version.mkdir()
        paths = ca.issue(f"server-{n}")
        shutil.copy(paths.cert, version / "tls.crt")
        shutil.copy(paths.key, version / "tls.key")
        versions[n] = paths
    (live / "..data").symlink_to("..2026_1")
    for name in ("tls.crt", "tls.key"):
        (live / name).symlink_to(f"..data/{name}")
    server = ServerThread(root / "data", tls_cert_file=live / "tls.crt", tls_key_file=live / "tls.key").start()
    try:
        assert served_serial(port_of(server)) == serial_of(versions[1].cert)
        (live / "..data_tmp").symlink_to("..2026_2")
        os.replace(live / "..data_tmp", live / "..data")
        assert served_serial(port_of(server)) == serial_of(versions[2].cert)
    finally:
        server.stop()


# --- server-side TLS only -----------------------------------------------------------------------


def test_server_side_tls_needs_a_bearer_token(root: Path) -> None:
    ca = TestCA(root / "ca")
    server_cert = ca.issue("server")
    bystander = ca.issue_client("bystander", "bystander", uris=("spiffe://test/ns/bystander",))
    server = ServerThread(
        root / "data", tls_cert_file=server_cert.cert, tls_key_file=server_cert.key,
        # Named in the policy, yet never asked for: without a client CA the server requests no
        # certificate, so this one cannot name the caller.
        policy=(("spiffe://test/ns/bystander", ("providers:read",)),),
    ).start()
    try:
        with token_channel(server.target, server.token, credentials(ca.path)) as channel:
            assert list_providers(channel) == grpc.StatusCode.OK
        with grpc.secure_channel(server.target, credentials(ca.path), options=LOCAL_ONLY) as channel:
            assert list_providers(channel) == grpc.StatusCode.UNAUTHENTICATED
        with grpc.secure_channel(server.target, credentials(ca.path, bystander), options=LOCAL_ONLY) as channel:
            assert list_providers(channel) == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(server.target, options=LOCAL_ONLY) as channel:  # plaintext to a TLS port
            assert list_providers(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_unreadable_certificate_files_fail_start_up_clearly(root: Path) -> None:
    ca = TestCA(root / "ca")
    other = ca.issue("other")
    server_cert = ca.issue("server")
    cases = [
        ("missing certificate", dict(tls_cert_file=root / "absent.pem", tls_key_file=server_cert.key), "absent.pem"),
        ("key of another certificate", dict(tls_cert_file=server_cert.cert, tls_key_file=other.key), "does not belong"),
        ("client CA file without a certificate", dict(
            tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=server_cert.key), "TLS"),
    ]
    for n, (why, settings, says) in enumerate(cases):
        with pytest.raises(FailedPrecondition, match="cannot use the TLS certificate files") as failure:
            ServerThread(root / f"data{n}", **settings).start()
        assert says in str(failure.value), why
        assert "PRIVATE KEY" not in str(failure.value)


# --- settings -----------------------------------------------------------------------------------


LISTEN = [
    ("127.0.0.1:2587", True, "IPv4 loopback"),
    ("127.8.9.10:2587", True, "all of 127/8 is loopback"),
    ("[::1]:2587", True, "IPv6 loopback"),
    ("localhost:2587", True, "the loopback name"),
    ("0.0.0.0:2587", False, "every IPv4 interface"),
    ("[::]:2587", False, "every IPv6 interface"),
    ("192.0.2.10:2587", False, "a routable address"),
    ("smtpconfig.example:2587", False, "a host name that is not localhost"),
]


@pytest.mark.parametrize("address,loopback,reason", LISTEN, ids=[c[2] for c in LISTEN])
def test_listening_off_loopback_needs_tls_or_an_explicit_force(address: str, loopback: bool, reason: str) -> None:
    env = {"SMTPCONFIG_LISTEN": address}
    if loopback:
        assert load(env=env).listen == (address,)
    else:
        with pytest.raises(SettingsError, match="is not a loopback address and TLS is not configured") as refused:
            load(env=env)
        assert address in str(refused.value) and "allow_insecure_listen" in str(refused.value)
    assert load(env={**env, "SMTPCONFIG_ALLOW_INSECURE_LISTEN": "true"}).listen == (address,)
    tls = load(env={**env, "SMTPCONFIG_TLS_CERT_FILE": "/c.pem", "SMTPCONFIG_TLS_KEY_FILE": "/k.pem"})
    assert tls.listen == (address,) and tls.tls_cert_file == Path("/c.pem")


TLS_PAIRS = [
    ({"SMTPCONFIG_TLS_CERT_FILE": "/c.pem"}, "go together", "certificate without key"),
    ({"SMTPCONFIG_TLS_KEY_FILE": "/k.pem"}, "go together", "key without certificate"),
    ({"SMTPCONFIG_TLS_CLIENT_CA_FILE": "/ca.pem"}, "needs tls_cert_file and tls_key_file", "client CA alone"),
    ({"SMTPCONFIG_TLS_CLIENT_CA_FILE": "/ca.pem", "SMTPCONFIG_TLS_CERT_FILE": "/c.pem"}, "go together",
     "client CA and a certificate without key"),
]


@pytest.mark.parametrize("env,says,reason", TLS_PAIRS, ids=[c[2] for c in TLS_PAIRS])
def test_incomplete_tls_settings_are_refused(env: dict, says: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load(env=env)


def test_tls_files_in_the_config_file_are_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "smtpconfig.toml"
    config.write_text('tls_cert_file = "tls/c.pem"\ntls_key_file = "tls/k.pem"\ntls_client_ca_file = "/etc/ca.pem"\n')
    settings = load(env={}, config_file=config)
    assert settings.tls_cert_file == tmp_path / "tls/c.pem" and settings.tls_key_file == tmp_path / "tls/k.pem"
    assert settings.tls_client_ca_file == Path("/etc/ca.pem")


SOCKET_MODES = [
    ("0600", 0o600, "the default: the owner only"),
    ("0660", 0o660, "owner and group"),
    ("0640", 0o640, "group may not connect (connect needs write), but the mode is safe"),
    ("0666", None, "every local user could connect"),
    ("0602", None, "others may write: may connect"),
    ("0604", None, "others may read"),
    ("0606", None, "others may read and write"),
    ("0460", None, "the owner cannot write: the server's own CLI could not connect"),
    ("1660", None, "sticky bit: not a plain permission mode"),
    ("660x", None, "not octal"),
]


@pytest.mark.parametrize("text,mode,reason", SOCKET_MODES, ids=[c[2] for c in SOCKET_MODES])
def test_socket_modes(text: str, mode: int | None, reason: str, tmp_path: Path) -> None:
    env = {"SMTPCONFIG_UNIX_SOCKET_MODE": text}
    if mode is None:
        with pytest.raises(SettingsError, match="unix_socket_mode"):
            load(env=env)
        return
    assert load(env=env).unix_socket_mode == mode
    config = tmp_path / "c.toml"
    config.write_text(f"unix_socket_mode = 0o{text[1:]}\n")  # a TOML octal integer works too
    assert load(env={}, config_file=config).unix_socket_mode == mode


def test_a_toml_integer_mode_open_to_others_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("unix_socket_mode = 0o666\n")
    with pytest.raises(SettingsError, match="every local user"):
        load(env={}, config_file=config)


# --- the socket file ----------------------------------------------------------------------------


def another_group() -> tuple[int, str]:
    """A group this process may give a file to, other than its own when there is one (so the test
    sees the server change the group rather than the group the file was created with)."""
    own = os.getgid()
    candidates = [g.gr_gid for g in grp.getgrall()] if os.geteuid() == 0 else list(os.getgroups())
    gid = next((g for g in candidates if g != own), own)
    return gid, grp.getgrgid(gid).gr_name


def test_socket_mode_and_group_are_applied(root: Path) -> None:
    gid, name = another_group()
    for n, (mode, group) in enumerate([(0o600, ""), (0o660, str(gid)), (0o640, name)]):
        server = ServerThread(root / f"data{n}", unix_socket_mode=mode, unix_socket_group=group).start()
        try:
            path = server.app.socket_path
            assert path is not None
            status = path.stat()
            assert stat.S_ISSOCK(status.st_mode)
            assert stat.S_IMODE(status.st_mode) == mode, f"{stat.S_IMODE(status.st_mode):o}"
            assert status.st_gid == (gid if group else os.getgid())
            with grpc.insecure_channel(f"unix:{path}") as channel:  # and it still serves
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            server.stop()


# Run as another user: what it may do with the data directory and the socket in it.
_PROBE = """
import json, os, socket, sys
data, path = sys.argv[1:]
seen = {}
def attempt(name, action):
    try:
        action()
        seen[name] = "ok"
    except PermissionError:
        seen[name] = "denied"
def connect():
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
attempt("connect", connect)
attempt("list", lambda: os.listdir(data))
attempt("read", lambda: open(os.path.join(data, "admin.token")).read())
print(json.dumps(seen))
"""


def test_a_socket_group_passes_through_the_default_data_directory(root: Path) -> None:
    assert os.geteuid() == 0, "this test acts as other users, which needs root"
    # The test's own interpreter may live where other users cannot reach (pyenv under /root).
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python, "a system python3 is needed to act as another user"
    gid, name = another_group()
    assert gid != os.getgid(), "no group other than the server's own to test with"
    root.chmod(0o711)  # others may pass through to the data directory, as under /var/lib
    server = ServerThread(root / "data", unix_socket_mode=0o660, unix_socket_group=name).start()
    try:
        data_dir, path = server.data_dir, server.app.socket_path
        assert path is not None and path.parent == data_dir  # the default place
        status = data_dir.stat()
        assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o710, gid), f"{stat.S_IMODE(status.st_mode):o}"
        status = path.stat()
        assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o660, gid)
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir() if p != path and p.is_file()}
        assert {"smtpconfig.db", "admin.token", "secret.key", "store.lock"} <= files.keys()
        assert all(mode == 0o600 for mode in files.values()), {n: f"{m:o}" for n, m in files.items()}
        # The one directory in it, the audit log's, is the owner's alone too; the group may not pass.
        assert [p.name for p in data_dir.iterdir() if p.is_dir()] == ["audit"]
        assert stat.S_IMODE((data_dir / "audit").stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (data_dir / "audit").iterdir())

        def as_user(group: int) -> dict[str, str]:
            result = subprocess.run([python, "-c", _PROBE, str(data_dir), str(path)], user=65534, group=group,
                                    extra_groups=[], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        # A member of the group reaches the socket, and nothing else in the directory...
        assert as_user(gid) == {"connect": "ok", "list": "denied", "read": "denied"}
        # ...and anyone else not even the socket.
        assert as_user(65534) == {"connect": "denied", "list": "denied", "read": "denied"}
    finally:
        server.stop()


def test_an_unknown_socket_group_fails_start_up_clearly(root: Path) -> None:
    server = ServerThread(root / "data", unix_socket_group="no-such-group-7f3a")
    with pytest.raises(FailedPrecondition, match="unix_socket_group 'no-such-group-7f3a' is not a group on this machine"):
        server.start()
    assert not (root / "data" / "smtpconfig.sock").exists(), "the half-started server left its socket behind"

    # As an operator sees it: `smtpconfig serve` says why and exits 1.
    data_dir = root / "process"
    result = subprocess.run(
        [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        env={**os.environ, "SMTPCONFIG_UNIX_SOCKET_GROUP": "no-such-group-7f3a"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "unix_socket_group 'no-such-group-7f3a' is not a group on this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists(), "refused before the data directory, the socket or its staging place were made"


def test_a_socket_group_the_server_may_not_use_fails_start_up_clearly() -> None:
    root = short_dir("grp")
    try:
        own = set(os.getgroups()) | {os.getgid()}
        group = next(g for g in grp.getgrall() if g.gr_gid not in own).gr_name
        command = [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(root / "d"), "--listen", "127.0.0.1:0"]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to drop root's CAP_CHOWN"
            command = [setpriv, "--bounding-set=-chown", "--", *command]
        result = subprocess.run(command, env={**os.environ, "SMTPCONFIG_UNIX_SOCKET_GROUP": group},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr[-600:]
        assert f"group {group!r}" in result.stderr
        assert not (root / "d" / "smtpconfig.sock").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the socket is never open to others, not even while it is being made --------------------------


class DirectoryEvents:
    """inotify on one directory: the kernel queues every event, so nothing is missed between polls.
    A file's mode changes only with an IN_ATTRIB event; a name that appears and never gets one has
    had the mode it has now from its first moment."""

    CREATE, ATTRIB, MOVED_TO = 0x100, 0x4, 0x80
    _NAMES = {CREATE: "created", ATTRIB: "attributes changed", MOVED_TO: "moved in"}

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        mask = self.CREATE | self.ATTRIB | self.MOVED_TO
        assert self._libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) >= 0, os.strerror(ctypes.get_errno())

    def of(self, name: str) -> list[str]:
        """What happened to `name` so far, in order."""
        data = b""
        while True:
            try:
                data += os.read(self._fd, 65536)
            except BlockingIOError:
                break
        found, offset = [], 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            entry = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
            offset += 16 + length
            if entry == name:
                found += [text for bit, text in self._NAMES.items() if mask & bit]
        return found

    def close(self) -> None:
        os.close(self._fd)


SOCKET_PLACES = [
    ("data", "the default: the data directory's socket"),
    ("run/smtpconfig.sock", "outside the data directory, in a directory others may pass through"),
]


@pytest.mark.parametrize(("place", "why"), SOCKET_PLACES, ids=[p[1] for p in SOCKET_PLACES])
def test_under_umask_000_the_socket_is_never_open_to_others(root: Path, place: str, why: str) -> None:
    root.chmod(0o755)
    (root / "run").mkdir(mode=0o755)
    data_dir = root / "data"
    path = data_dir / "smtpconfig.sock" if place == "data" else root / place
    data_dir.mkdir(mode=0o700)
    events = DirectoryEvents(path.parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtpconfig.cli", "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
         "--unix-socket", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0),
    )
    try:
        wait_serving(f"unix:{path}", proc=proc)
        mode = stat.S_IMODE(path.lstat().st_mode)
        happened = events.of(path.name)
    finally:
        events.close()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert mode == 0o600, f"{mode:04o}"
    # Bound and chmod-ed in place, it would show "created" then "attributes changed": a moment at
    # the mode umask 000 gives (0777), connectable by every local user.
    assert happened in (["created"], ["moved in"]), f"{happened}: {why}\n{err.decode()}"
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == [], "no staging left behind"
