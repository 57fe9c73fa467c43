"""What every client command of the CLI shares: finding the server, calling it, explaining errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from service import settings as settings_mod

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def default_target(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if env.get("SMTPCONFIG_TARGET"):
        return env["SMTPCONFIG_TARGET"]
    data_dir = Path(env.get("SMTPCONFIG_DATA_DIR") or settings_mod.DEFAULT_DATA_DIR)
    socket = Path(env.get("SMTPCONFIG_UNIX_SOCKET") or data_dir / settings_mod.SOCKET_NAME)
    if socket.exists():
        return f"unix:{socket.absolute()}"
    listen = [a for a in env.get("SMTPCONFIG_LISTEN", "").split(",") if a.strip()]
    return listen[0].strip() if listen else settings_mod.DEFAULT_LISTEN


def call(args: argparse.Namespace, stub_class, method: str, request):
    target = args.target or default_target()
    with grpc.insecure_channel(target) as channel:
        stub = stub_class(channel)
        try:
            return getattr(stub, method)(request, timeout=args.timeout)
        except grpc.RpcError as error:
            raise explain(error, target) from None


def explain(error: grpc.RpcError, target: str) -> CliError:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the server at {target}: is it running (make run)? ({error.details()})")
    lines = [f"{code.name}: {error.details()}"] if code != grpc.StatusCode.INVALID_ARGUMENT else []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                lines = ["the server refused the profile (nothing was stored):"]
                lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
    exit_code = EXIT_BAD_INPUT if code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
    return CliError("\n".join(lines), exit_code)


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
