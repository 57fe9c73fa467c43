"""SMTP profiles as the JSON documents a caller sends, and the few helpers that turn them into
messages and back: the valid profiles most tests start from, and `edit` to change or drop one field
of a copy (a rule case is one valid profile with one thing broken)."""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import json_format

from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v2 import config_service_pb2 as v2

BASIC_V2: dict[str, Any] = {
    "Id": 1,
    "Host": "smtp.example.com",
    "Port": 587,
    "RelayAuthenticationType": 2,
    "RelayUsername": {"SecretValue": "relay-user"},
    "RelayPassword": {"SecretValue": "relay-password"},
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": True,
}

OAUTH_V2: dict[str, Any] = {
    "Host": "smtp.office365.com",
    "Port": 587,
    "RelayAuthenticationType": 3,
    "ClientId": {"SecretValue": "client-id-1"},
    "ClientSecret": {"SecretValue": "client-secret-1"},
    "TokenEndpoint": "https://login.example.com/tenant/oauth2/v2.0/token",
    "Scope": "https://outlook.office365.com/.default",
    "Audience": "api://smtp",
    "RequestHeaders": [{"Name": "X-Tenant", "Value": "t1"}],
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": True,
}

BASIC_V1: dict[str, Any] = {
    "Id": 1,
    "Host": "smtp.example.com",
    "Port": 25,
    "RelayAuthenticationType": 2,
    "RelayUsername": "relay-user",
    "RelayPassword": "relay-password",
    "SenderAccount": "relay@example.com",
    "SenderName": "Example Relay",
    "UseSSL": False,
}

DROP = object()  # as a value given to `edit`: leave the field out


def edit(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with `changes` applied; a field given DROP is removed."""
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def anonymous(smtp_host: str, smtp_port: int) -> dict[str, Any]:
    """A v2 profile without authentication and without TLS, for a relay on loopback."""
    return {"Id": 1, "Host": smtp_host, "Port": smtp_port, "RelayAuthenticationType": 0,
            "SenderAccount": "relay@example.com", "SenderName": "Relay", "UseSSL": False}


def v2_profile(doc: dict[str, Any]) -> v2.SmtpProfile:
    return json_format.ParseDict(doc, v2.SmtpProfile())


def v1_profile(doc: dict[str, Any]) -> v1.SmtpProfile:
    return json_format.ParseDict(doc, v1.SmtpProfile())


def as_json(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, use_integers_for_enums=True)
