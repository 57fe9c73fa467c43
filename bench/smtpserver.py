"""The SMTP server of the TestSmtp phase, as its own process, and the certificates it presents.

    python -m bench.smtpserver --cert CERT --key KEY

aiosmtpd on 127.0.0.1, a free port (printed as `PORT <n>`, as the gRPC servers do), offering
STARTTLS with CERT/KEY and, once TLS is up, AUTH PLAIN for USER/PASSWORD only; it requires both
STARTTLS and AUTH before MAIL, and accepts every message without keeping it. It stops when its
stdin closes or on SIGTERM/SIGINT.

Why a process of its own: the direct smtplib client runs in the benchmark's process, the
TestSmtp one in the service's. A server sharing a process (and a GIL) with one of them would
slow that side only.

`make_certs` writes a throwaway EC P-256 CA and a leaf for localhost and 127.0.0.1 signed by it:
the CA is what the service (`ca_bundle`) and the direct client trust.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hmac
import ipaddress
import logging
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
NAMES = ("localhost", "127.0.0.1")
USER = "relay-user"
PASSWORD = "bench-Smtp-Password-61b7d2"
GREETING_NAME = "smtp.bench"  # also spares aiosmtpd a socket.getfqdn() per connection


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A CA and a server leaf for NAMES, as PEM files in `directory`."""
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

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("smtpconfig bench CA"))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    ca = (
        builder("smtpconfig bench CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    sans = [x509.DNSName(NAMES[0])] + [x509.IPAddress(ipaddress.ip_address(n)) for n in NAMES[1:]]
    leaf = (
        builder(NAMES[0], key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certs(directory / "smtp-ca.pem", directory / "smtp-cert.pem", directory / "smtp-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    certs.key.touch(mode=0o600)
    certs.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certs


class _Handler:
    def authenticate(self, server, session, envelope, mechanism, auth_data):  # noqa: ANN001 - aiosmtpd's
        from aiosmtpd.smtp import AuthResult

        ok = auth_data.login == USER.encode() and hmac.compare_digest(auth_data.password, PASSWORD.encode())
        return AuthResult(success=ok, auth_data=USER if ok else None, handled=False)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's
        return "250 2.0.0 OK queued"


async def serve(cert: Path, key: Path) -> None:
    from aiosmtpd.smtp import SMTP

    from bench.servers import _announce, _until_stopped

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # without it each multi-line reply (EHLO) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    sock.listen(64)
    handler = _Handler()

    def session() -> SMTP:
        return SMTP(handler, hostname=GREETING_NAME, tls_context=context, require_starttls=True,
                    auth_required=True, auth_require_tls=True, auth_exclude_mechanism=["LOGIN"],
                    authenticator=handler.authenticate)

    server = await asyncio.get_running_loop().create_server(session, sock=sock)
    try:
        _announce(sock.getsockname()[1])
        await _until_stopped()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smtpserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="smtp server: %(levelname)s %(message)s")
    # aiosmtpd warns that Session.login_data is deprecated on every successful AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
