"""TLS for the TCP listeners, with certificates that are replaced without a restart.

gRPC asks `ReloadingCertificates.fetch` for the certificate configuration at every new TLS
handshake. It compares the files' identity (inode, size, modification time) with what it loaded
last, and reads them again only when they changed: a cert-manager renewal, a Kubernetes secret
update (which swaps a symlink) or an operator's `cp` is served from the next connection on.
Existing connections keep the certificate they were set up with.

A new set is checked before it is used (the key must belong to the certificate); while it is
half-written or mismatched, the previous one keeps being served and the problem is logged once.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from smtpconfig.core.errors import FailedPrecondition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple
    config: grpc.ServerCertificateConfiguration
    subject: str


class ReloadingCertificates:
    """A server certificate chain and key, and optionally the CA that client certificates must
    chain to (which makes every TCP caller present one: mTLS)."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self._paths = tuple(p for p in (cert_file, key_file, client_ca_file) if p is not None)
        self._cert_file, self._key_file, self._client_ca_file = cert_file, key_file, client_ca_file
        self._lock = threading.Lock()
        self._failed_stamp: tuple | None = None
        try:
            self._current = self._load(self._stamp())
        except (OSError, ValueError) as error:
            raise FailedPrecondition(f"cannot use the TLS certificate files: {error}") from None
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self._client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            # grpc documents that the fetcher returns None for "no change"; grpc-stubs leaves None out.
            self._current.config, self.fetch, require_client_authentication=self.mutual,  # type: ignore[arg-type]
        )

    def _stamp(self) -> tuple:
        stamp = []
        for path in self._paths:
            st = os.stat(path)  # follows symlinks, so a swapped ..data link counts as a change
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamp)

    def _load(self, stamp: tuple) -> _Loaded:
        chain = self._cert_file.read_bytes()
        key = self._key_file.read_bytes()
        try:
            leaf = x509.load_pem_x509_certificates(chain)[0]
        except ValueError as error:
            raise ValueError(f"{self._cert_file} holds no usable PEM certificate ({error})") from None
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{self._key_file} holds no usable unencrypted PEM private key ({error})") from None
        if _spki(private.public_key()) != _spki(leaf.public_key()):
            raise ValueError(f"the key in {self._key_file} does not belong to the certificate in {self._cert_file}")
        client_ca = None
        if self._client_ca_file is not None:
            client_ca = self._client_ca_file.read_bytes()
            try:
                x509.load_pem_x509_certificates(client_ca)  # refuse a file that holds no certificate
            except ValueError as error:
                raise ValueError(f"{self._client_ca_file} holds no usable PEM certificate ({error})") from None
        config = grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=client_ca)
        return _Loaded(stamp, config, leaf.subject.rfc4514_string())

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep the last."""
        try:
            stamp = self._stamp()
        except OSError as error:
            self._report(("missing",), f"a TLS file cannot be read ({error.strerror}); keeping the previous certificates")
            return None
        with self._lock:
            if stamp == self._current.stamp or stamp == self._failed_stamp:
                return None
            try:
                loaded = self._load(stamp)
            except (OSError, ValueError) as error:
                self._report(stamp, f"the changed TLS files cannot be used ({error}); keeping the previous certificates")
                return None
            self._current = loaded
            self.reloads += 1
        log.info("TLS certificates reloaded: now serving %s", loaded.subject)
        return loaded.config

    def _report(self, stamp: tuple, message: str) -> None:
        if stamp != self._failed_stamp:
            self._failed_stamp = stamp
            log.warning("%s", message)


def _spki(key: PublicKeyTypes) -> bytes:
    """A public key as DER SubjectPublicKeyInfo: comparable for every key type (`public_numbers`
    exists only for RSA, DSA, EC and DH keys)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
