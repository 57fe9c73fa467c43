"""The SMTP server of the TestSmtp phase, as its own process.

    python -m bench.smtpserver --cert CERT --key KEY

aiosmtpd on 127.0.0.1, a free port (printed as `PORT <n>`, as the gRPC servers do), offering
STARTTLS with CERT/KEY and, once TLS is up, AUTH PLAIN for USER/PASSWORD only; it requires both
STARTTLS and AUTH before MAIL, and accepts every message without keeping it. It stops when its
stdin closes or on SIGTERM/SIGINT.

Why a process of its own: the direct smtplib client runs in the benchmark's process, the
TestSmtp one in the service's. A server sharing a process (and a GIL) with one of them would
slow that side only.

Its certificate comes from `bench.certs.make_certs` (a leaf for localhost and 127.0.0.1 signed by a
throwaway CA): the CA is what the service (`ca_bundle`) and the direct client trust.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import socket
import ssl
import sys
from pathlib import Path

HOST = "127.0.0.1"
USER = "relay-user"
PASSWORD = "bench-Smtp-Password-61b7d2"
GREETING_NAME = "smtp.bench"  # also spares aiosmtpd a socket.getfqdn() per connection


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
