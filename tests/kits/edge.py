"""What the edge tests share: the planted tokens and password, the central's profile, and small
helpers for calling and waiting."""

from __future__ import annotations

import time

import grpc

from smtpconfig.v2 import config_service_pb2 as v2
from tests.kits.profiles import BASIC_V2, edit

ADMIN_TOKEN = "PLANTED-central-admin-4f1a"
EDGE_TOKEN = "PLANTED-edge-upstream-token-91d2"
UNTRUSTED_TOKEN = "PLANTED-edge-b-upstream-token-33c7"
APP_TOKEN = "PLANTED-billing-app-token-0e5b"
PASSWORD = "PLANTED-edge-relay-password-6a0c"
FILES = 3
EDGE_PERMISSIONS = ("smtp:read", "smtp:watch", "smtp:resolve", "smtp:test")
PROFILE = edit(BASIC_V2, RelayPassword={"Provider": FILES, "Parameters": {"File": "smtp-password"}})
Event = v2.WatchSmtpEvent


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)



def until(check, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except grpc.RpcError:
            if time.monotonic() > end:
                raise
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)
