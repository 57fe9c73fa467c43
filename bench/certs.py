"""The benchmark's throwaway PKI: one EC P-256 CA and the leaves it signs, as PEM files.

`make_certs` writes the CA, a server leaf for localhost and 127.0.0.1 (presented by the SMTP server
of the TestSmtp phase and by the gRPC servers measured over TLS) and a client leaf whose only name
is the URI SAN `CLIENT_ID` (the identity the service's policy names for mTLS callers). The CA is
what every client trusts, the apply service's `ca_bundle` and the mTLS servers' client CA.

The benchmark has its own copy of this rather than tests/kits/testca.py's: bench code does not import
from tests/. EC keys keep generation to a few milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

NAMES = ("localhost", "127.0.0.1")
# The mTLS client's identity: its certificate's one URI SAN, granted every permission by the
# services the benchmark starts (bench.servers).
CLIENT_ID = "spiffe://bench/client"


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate: what clients trust, and what mTLS servers require client leaves to chain to
    cert: Path  # server leaf for NAMES
    key: Path
    client_cert: Path  # client leaf for CLIENT_ID
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """A CA, a server leaf for NAMES and a client leaf for CLIENT_ID, as PEM files in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def usage(signs: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=signs,
                             crl_sign=signs, encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("smtpconfig bench CA"))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def leaf(subject: str, sans: list, purpose) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    ca = (
        builder("smtpconfig bench CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = leaf(NAMES[0], [x509.DNSName(NAMES[0])] + [x509.IPAddress(ipaddress.ip_address(n)) for n in NAMES[1:]],
                  ExtendedKeyUsageOID.SERVER_AUTH)
    client = leaf("bench client", [x509.UniformResourceIdentifier(CLIENT_ID)], ExtendedKeyUsageOID.CLIENT_AUTH)
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                  directory / "client.pem", directory / "client-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for (cert, key), cert_path, key_path in ((server, certs.cert, certs.key),
                                              (client, certs.client_cert, certs.client_key)):
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certs
