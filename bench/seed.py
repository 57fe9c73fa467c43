"""What the service answers during the benchmark: a realistic stored profile.

GetSmtp on an empty store measures an error path, not the read path clients use. So before
measuring, the benchmark stores a typical submission relay (Basic auth with inline credentials,
port 587, TLS) through UpdateSmtp, exactly as a client would, and reads it back once: the size of
that GetSmtp response is what the echo servers are sent, so every target returns the same bytes.
"""

from __future__ import annotations

import grpc

from bench import BenchError
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2

_SERVICE = v2.DESCRIPTOR.services_by_name["ConfigService"]
GETSMTP_PATH = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['GetSmtp'].name}"
# The serialized empty GetSmtpRequest (zero bytes), sent as-is on every measured call.
GETSMTP_REQUEST = v2.GetSmtpRequest().SerializeToString()

TIMEOUT = 10.0


def relay_profile() -> v2.SmtpProfile:
    return v2.SmtpProfile(
        id=1,
        host="smtp.example.com",
        port=587,
        relay_authentication_type=v2.RELAY_AUTHENTICATION_TYPE_BASIC,
        relay_username=secret_pb2.SecretObject(secret_value="relay@example.com"),
        relay_password=secret_pb2.SecretObject(secret_value="bench-Password-3f9c2a71e0"),
        sender_account="relay@example.com",
        sender_name="Relay",
        use_ssl=True,
    )


def store_profile(target: str) -> int:
    """Store the profile on the service at `target`; return GetSmtp's response size in bytes."""
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
            v2_grpc.ConfigServiceStub(channel).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=relay_profile()), timeout=TIMEOUT
            )
            raw = channel.unary_unary(GETSMTP_PATH)(GETSMTP_REQUEST, timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        raise BenchError(f"the service at {target} did not accept a connection in {TIMEOUT:.0f}s") from None
    except grpc.RpcError as error:
        raise BenchError(f"storing the benchmark profile failed: {error.code().name}: {error.details()}") from None
    stored = v2.GetSmtpResponse.FromString(raw)
    if stored.profile.host != "smtp.example.com" or not stored.profile.relay_username.secret_value:
        raise BenchError(f"GetSmtp did not return the stored profile: {stored}")
    return len(raw)
