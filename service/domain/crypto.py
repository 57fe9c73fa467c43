"""Encryption of secret values at rest: AES-256-GCM from `cryptography`, with a key the operator holds.

A sealed value is ``v1.<key id>.<base64url(nonce || ciphertext)>``. The associated data binds each
ciphertext to the place it was written for (``smtp/profile/1#RelayPassword``), so a value copied to
another field or record does not decrypt. The key id names which key sealed it, so a wrong key is
reported as such instead of as corrupt data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.core.secret import Secret

log = logging.getLogger(__name__)

KEY_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = "v1"


class KeyProblem(FailedPrecondition):
    """The encryption key is missing, malformed, or not the one the data was sealed with."""


class Sealer:
    """Seals and opens secret values with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyProblem(f"the encryption key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"smtpconfig key id\x00" + key).hexdigest()[:12]
        # A separate key for fingerprints, so they reveal nothing about the sealing key.
        self._fingerprint_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"smtpconfig fingerprint v1"
        ).derive(key)

    def fingerprint(self, value: Secret) -> str:
        """A keyed fingerprint of a value: equal values give equal fingerprints under one key, and
        without the key nothing about the value can be learnt or guessed offline."""
        mac = hmac.digest(self._fingerprint_key, value.reveal().encode("utf-8"), "sha256")
        return "hmac-sha256:" + mac.hex()[:32]

    def seal(self, value: Secret, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.reveal().encode("utf-8"), context.encode("utf-8"))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{_FORMAT}.{self.key_id}.{body}"

    def open(self, token: str, context: str) -> Secret:
        try:
            fmt, key_id, body = token.split(".", 2)
        except ValueError:
            raise KeyProblem(f"sealed value for {context} is malformed") from None
        if fmt != _FORMAT:
            raise KeyProblem(f"sealed value for {context} has unknown format {fmt!r}")
        if key_id != self.key_id:
            raise KeyProblem(
                f"{context} was encrypted with key {key_id}, but the configured key is"
                f" {self.key_id}; start the server with the key the data was written with"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
        except (InvalidTag, binascii.Error, ValueError):
            raise KeyProblem(f"sealed value for {context} failed authentication") from None
        return Secret(plain.decode("utf-8"))


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise KeyProblem(f"{source} must hold a base64-encoded {KEY_BYTES}-byte key") from None
    if len(key) != KEY_BYTES:
        raise KeyProblem(f"{source} must hold a base64-encoded {KEY_BYTES}-byte key")
    return key


def load_key(*, env_value: str | None, key_file: Path, create: bool, sealed_data: Path | None = None) -> bytes:
    """Find the key: the env value wins, else `key_file`, created with mode 0600 when `create` and
    `sealed_data` (the database that holds values sealed with the key) does not exist yet."""
    if env_value:
        return decode_key(env_value, "SMTPCONFIG_KEY")
    try:
        mode = key_file.stat().st_mode
    except FileNotFoundError:
        if not create:
            raise KeyProblem(f"key file {key_file} does not exist") from None
        if sealed_data is not None and sealed_data.exists():
            # A new key could open nothing in it, and would stand where the right key belongs.
            raise KeyProblem(
                f"key file {key_file} is missing but {sealed_data} exists, sealed with that key;"
                " restore the key file (or give the key in SMTPCONFIG_KEY). Nothing was written"
            ) from None
        return _create_key_file(key_file)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyProblem(
            f"key file {key_file} can be read by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it,"
            " or give the key in SMTPCONFIG_KEY where files cannot be kept private (see docs/deployment.md)"
        )
    return decode_key(key_file.read_text(encoding="ascii"), f"key file {key_file}")


def _create_key_file(path: Path) -> bytes:
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (encode_key(key) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.info("generated encryption key file %s (mode 0600); back it up with the data", path)
    return key
