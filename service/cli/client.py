"""What every client command of the CLI shares: finding the server, calling it, explaining errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]  # ships no type information

from smtpconfig import settings as settings_mod
from smtpconfig.api.auth import ADMIN_TOKEN_NAME

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def default_target(env: dict[str, str] | None = None) -> str:
    """SMTPCONFIG_TARGET, else the data directory's socket. Never a TCP address by guesswork: while
    the server is down any local user can listen on its port and read what the CLI sends (a
    profile carries passwords), so with no socket the CLI stops and says what to give it."""
    env = dict(os.environ) if env is None else env
    if env.get("SMTPCONFIG_TARGET"):
        return env["SMTPCONFIG_TARGET"]
    data_dir = Path(env.get("SMTPCONFIG_DATA_DIR") or settings_mod.DEFAULT_DATA_DIR)
    socket = Path(env.get("SMTPCONFIG_UNIX_SOCKET") or data_dir / settings_mod.SOCKET_NAME)
    if socket.exists():
        return f"unix:{socket.absolute()}"
    raise CliError(
        f"no server socket at {socket.absolute()}: is the server running (make run)? To reach a TCP"
        " address give --target (SMTPCONFIG_TARGET) and a token (--token-file, SMTPCONFIG_TOKEN_FILE"
        " or SMTPCONFIG_TOKEN)"
    )


def add_connection_args(parser: argparse.ArgumentParser, timeout: float = 10.0) -> None:
    """Where the server is and how to prove who we are: every client command takes these."""
    parser.add_argument(
        "--target",
        help="server address: host:port or unix:PATH (env SMTPCONFIG_TARGET; default: the data"
        " directory's socket)",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout, help="seconds to wait for an answer (default %(default)s)"
    )
    parser.add_argument(
        "--token-file",
        help="file holding a bearer token (env SMTPCONFIG_TOKEN_FILE, or the token itself in"
        " SMTPCONFIG_TOKEN; default: over the data directory's own socket only, the admin.token beside it)",
    )
    parser.add_argument("--ca", help="CA bundle to verify the server's TLS certificate (env SMTPCONFIG_TLS_CA)")
    parser.add_argument("--cert", help="client certificate for mTLS (env SMTPCONFIG_TLS_CERT)")
    parser.add_argument("--key", help="key of the client certificate (env SMTPCONFIG_TLS_KEY)")


def find_token(args: argparse.Namespace, target: str, env: dict[str, str] | None = None) -> str | None:
    """The bearer token to send: named, from the environment, or the embedded default's admin
    token when the target is its own data directory's socket (see `_admin_token_for`)."""
    env = dict(os.environ) if env is None else env
    named = getattr(args, "token_file", None) or env.get("SMTPCONFIG_TOKEN_FILE")
    if named:
        try:
            return Path(named).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise CliError(f"cannot read the token file {named}: {error.strerror}", EXIT_BAD_INPUT) from None
    if env.get("SMTPCONFIG_TOKEN"):
        return env["SMTPCONFIG_TOKEN"].strip()
    return _admin_token_for(target)


def _admin_token_for(target: str) -> str | None:
    """The admin token, only for the socket in the directory it lies in, and only when one user
    owns both. A TCP port or a socket elsewhere may belong to anyone on this machine; a token file
    that is a link, or owned by someone else than the socket's owner, is not that server's; in a
    directory everyone may write to, the socket could be swapped after the check."""
    if target.startswith("unix://"):
        socket_path = Path(target[len("unix://"):])
    elif target.startswith("unix:"):
        socket_path = Path(target[len("unix:"):])
    else:
        return None
    try:
        directory, server = socket_path.parent.stat(), socket_path.lstat()
    except OSError:
        return None
    # Anyone may rename entries of a world-writable directory without the sticky bit. (A group
    # may, too; but Kubernetes makes an fsGroup volume group-writable, and that group is the pod's.)
    shared = directory.st_mode & stat.S_IWOTH and not directory.st_mode & stat.S_ISVTX
    if not stat.S_ISSOCK(server.st_mode) or shared:
        return None
    try:
        # The file opened is the file checked: no link followed, no FIFO waited on.
        fd = os.open(socket_path.parent / ADMIN_TOKEN_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or held.st_uid != server.st_uid:
            return None
        return file.read(4096).decode("utf-8", "replace").strip() or None


def _channel(args: argparse.Namespace, target: str) -> grpc.Channel:
    ca = getattr(args, "ca", None) or os.environ.get("SMTPCONFIG_TLS_CA")
    if not ca:
        return grpc.insecure_channel(target)
    cert = getattr(args, "cert", None) or os.environ.get("SMTPCONFIG_TLS_CERT")
    key = getattr(args, "key", None) or os.environ.get("SMTPCONFIG_TLS_KEY")
    if bool(cert) != bool(key):
        raise CliError("give both --cert and --key for a client certificate, or neither", EXIT_BAD_INPUT)
    try:
        credentials = grpc.ssl_channel_credentials(
            Path(ca).read_bytes(),
            Path(key).read_bytes() if key else None,
            Path(cert).read_bytes() if cert else None,
        )
    except OSError as error:
        raise CliError(f"cannot read {error.filename}: {error.strerror}", EXIT_BAD_INPUT) from None
    return grpc.secure_channel(target, credentials)


def _local(target: str) -> bool:
    """A Unix socket or a loopback TCP address: nothing sent to it crosses a network."""
    if target.startswith("unix:"):
        return True
    try:
        host, _ = settings_mod.split_address(target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:"))
    except settings_mod.SettingsError:
        return False
    return settings_mod.is_loopback(host)


def call(args: argparse.Namespace, stub_class, method: str, request, flags: Callable[[str], str] | None = None):
    """Call `method`; a refusal becomes a CliError that names each bad field as `flags` spells it
    (the command-line flag that gave it) when given."""
    with connection(args) as (channel, metadata, target):
        stub = stub_class(channel)
        try:
            return getattr(stub, method)(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise failure(error, target, args, writes=method.startswith(_WRITES), flags=flags) from None


@contextlib.contextmanager
def connection(args: argparse.Namespace) -> Iterator[tuple[grpc.Channel, tuple[tuple[str, str], ...], str]]:
    """A channel to the server the arguments name, the metadata that identifies us, and the
    target, for commands that make more than one call (a stream they resume)."""
    target = args.target or default_target()
    _check_target(target)
    token = find_token(args, target)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    secure = bool(getattr(args, "ca", None) or os.environ.get("SMTPCONFIG_TLS_CA"))
    if token and not secure and not _local(target):
        raise CliError(
            f"refusing to send a bearer token in clear text to {target}: give --ca (SMTPCONFIG_TLS_CA)"
            " to talk TLS to a server on another machine", EXIT_BAD_INPUT,
        )
    with _channel(args, target) as channel:
        yield channel, metadata, target


def failure(
    error: grpc.RpcError, target: str, args: argparse.Namespace, *, writes: bool = False,
    flags: Callable[[str], str] | None = None,
) -> CliError:
    """What a failed call means, in words for the operator."""
    return _tls_failure(error, target, args) or explain(error, target, writes=writes, flags=flags)


def _tls_failure(error: grpc.RpcError, target: str, args: argparse.Namespace) -> CliError | None:
    """What a connection that failed in or for lack of the TLS handshake most likely means. A
    TLS server closes the connection without a word when a client sends plaintext, or brings no
    client certificate (or one it does not trust) where it asks for one."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    secure = bool(getattr(args, "ca", None) or os.environ.get("SMTPCONFIG_TLS_CA"))
    client_cert = bool(getattr(args, "cert", None) or os.environ.get("SMTPCONFIG_TLS_CERT"))
    details = error.details() or ""
    said = details.lower()
    if "handshake failed" in said:
        reason = details[said.index("handshake failed"):]
        if "wrong_version_number" in said:
            why = ("the server does not talk TLS there; leave out --ca (and SMTPCONFIG_TLS_CA) for a server"
                   " without TLS")
        elif "certificate_verify_failed" in said or "peer name" in said:
            why = ("the server's certificate is not trusted by --ca (SMTPCONFIG_TLS_CA): give the CA that"
                   " signed it, and a target whose host name the certificate names")
        else:
            why = "see the reason below"
        return CliError(f"TLS handshake with {target} failed: {why}\n  ({reason})")
    if "socket closed" not in said or "failed to connect" not in said:
        return None
    if secure:
        why = ("the server asks for a client certificate signed by its tls_client_ca_file; give --cert and --key"
               if not client_cert else
               "the server did not accept the client certificate (--cert): it must be signed by the server's"
               " tls_client_ca_file and allowed for client authentication")
        return CliError(f"TLS handshake with {target} failed: the server closed the connection; most likely {why}")
    return CliError(
        f"the server at {target} closed the connection before answering: it most likely talks TLS only;"
        " give --ca FILE (SMTPCONFIG_TLS_CA) with the CA that signed its certificate, and --cert and --key"
        " if it asks for client certificates"
    )


def _check_target(target: str) -> None:
    """host:port or unix:PATH, said before anything is dialled: grpcio would take `nonsense` for a
    name to look up, and fail later with a DNS error that hides the typo."""
    if target.startswith("unix:"):
        return
    address = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    try:
        settings_mod.split_address(address)
    except settings_mod.SettingsError:
        raise CliError(
            f"--target {target!r} is not host:port (such as 127.0.0.1:2587) or unix:PATH", EXIT_BAD_INPUT
        ) from None


_WRITES = ("Update", "Create", "Delete")


def explain(
    error: grpc.RpcError, target: str, *, writes: bool = True, flags: Callable[[str], str] | None = None
) -> CliError:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (error.details() or "").lower():
        return CliError(f"cannot reach the server at {target}: is it running (make run)? ({error.details()})")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(
            f"UNAUTHENTICATED: {error.details()}\n  give a token with --token-file or SMTPCONFIG_TOKEN_FILE,"
            " or a client certificate with --ca, --cert and --key (the admin token goes on its own"
            " only over the data directory's Unix socket)"
        )
    lines: list[str] = []
    for detail in _status_details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines = ["the server refused the request" + (" (nothing was stored):" if writes else ":")]
            lines += [f"  {(flags or str)(v.field)}: {v.description}" for v in bad.field_violations]
    if not lines:
        lines = [f"{code.name}: {error.details()}"]
    exit_code = EXIT_BAD_INPUT if code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
    return CliError("\n".join(lines), exit_code)


def _status_details(error: grpc.RpcError) -> list[any_pb2.Any]:
    """The details of the `google.rpc.Status` a failed call carries, as grpcio-status reads them
    from its trailers. A status at odds with the call's own code or message, or one that does not
    decode, is not trusted: the call's code and message are then all there is to show."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        return []
    return list(status.details) if status is not None else []


def read_payload(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}", EXIT_BAD_INPUT) from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{path} is not JSON: {error.msg} at line {error.lineno} column {error.colno}", EXIT_BAD_INPUT) from None
    if not isinstance(payload, dict):
        raise CliError(f"{path} must hold a JSON object with the profile's fields", EXIT_BAD_INPUT)
    return payload
