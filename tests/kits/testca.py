"""A throwaway certificate authority for tests that talk TLS to a real server on loopback.

`TestCA` makes an EC P-256 root and issues server leaves (`issue`) and mTLS client leaves
(`issue_client`) signed by it; `self_signed` makes a leaf that no CA vouches for. Everything is
written as PEM files to a directory, because the code under test takes a CA bundle *path*, as an
operator would configure it. `make_pki` builds the usual set:
a leaf for this machine, one for another host name, and a self-signed one.

EC keys keep generation to a few milliseconds, so a fresh set per test session costs nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
OTHER_HOST = "other.example"


@dataclass(frozen=True)
class CertPaths:
    """PEM files for one server: `ca` is the bundle a client trusts, `cert` and `key` the server's.

    For a self-signed leaf `ca` is the leaf itself (trusting it explicitly is the only way to
    verify it)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPKI:
    """The set `make_pki` writes: one CA and three server identities."""

    __test__ = False  # not a pytest test class despite the name

    ca: Path
    localhost: CertPaths  # signed by `ca`, valid for localhost, 127.0.0.1 and ::1
    other_host: CertPaths  # signed by `ca`, valid only for other.example
    self_signed: CertPaths  # valid for the local names, but signed by nobody `ca` knows


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _leaf_builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
                  sans: Iterable[str], lifetime: datetime.timedelta,
                  *, own_anchor: bool = False) -> x509.CertificateBuilder:
    # `own_anchor`: a self-signed server certificate shaped like `openssl req -x509` makes (CA:TRUE,
    # may sign certificates), so that OpenSSL sees it as self-signed, reports "self-signed
    # certificate" when it is not trusted, and accepts it when it is given as its own CA file.
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        # Backdated a little so a clock a few seconds behind does not make the leaf "not yet valid".
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=own_anchor, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=own_anchor, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


class TestCA:
    """A root CA whose certificate is written to `directory/ca.pem` on creation."""

    __test__ = False

    def __init__(self, directory: Path, name: str = "smtpconfig test CA",
                 lifetime: datetime.timedelta = datetime.timedelta(days=2)) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lifetime = lifetime
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(name)
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(self._name).issuer_name(self._name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.path = self.directory / "ca.pem"
        _write_cert(self.path, self.certificate)

    def issue(self, stem: str, sans: Iterable[str] = LOCAL_NAMES) -> CertPaths:
        """A server leaf for `sans` (DNS names or IP literals), written as `<stem>.pem` and
        `<stem>-key.pem`."""
        sans = tuple(sans)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _leaf_builder(_name(sans[0]), self._name, key, sans, self._lifetime)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        paths = CertPaths(self.path, self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem")
        _write_cert(paths.cert, cert)
        _write_key(paths.key, key)
        return paths

    def issue_client(self, stem: str, cn: str, uris: Iterable[str] = (), dns: Iterable[str] = ()) -> CertPaths:
        """A client leaf (clientAuth) with subject CN `cn` and, when given, URI and DNS SANs in
        that order (a leaf with neither has no SAN extension at all: only its CN names it),
        written as `<stem>.pem` and `<stem>-key.pem`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self._name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + self._lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        paths = CertPaths(self.path, self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem")
        _write_cert(paths.cert, cert)
        _write_key(paths.key, key)
        return paths


def self_signed(directory: Path, stem: str = "self-signed", sans: Iterable[str] = LOCAL_NAMES,
                lifetime: datetime.timedelta = datetime.timedelta(days=2)) -> CertPaths:
    """A leaf valid for `sans` that signs itself; its `ca` is its own certificate file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sans = tuple(sans)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(sans[0])
    cert = _leaf_builder(subject, subject, key, sans, lifetime, own_anchor=True).sign(key, hashes.SHA256())
    cert_path = directory / f"{stem}.pem"
    paths = CertPaths(cert_path, cert_path, directory / f"{stem}-key.pem")
    _write_cert(paths.cert, cert)
    _write_key(paths.key, key)
    return paths


def make_pki(directory: Path, sans: Iterable[str] = LOCAL_NAMES, other_host: str = OTHER_HOST) -> TestPKI:
    """A CA plus the three server identities TLS tests need, as PEM files in `directory`."""
    ca = TestCA(directory)
    return TestPKI(
        ca=ca.path,
        localhost=ca.issue("localhost", sans),
        other_host=ca.issue("other-host", (other_host,)),
        self_signed=self_signed(directory, "self-signed", sans),
    )
