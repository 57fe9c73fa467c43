"""What an edge serves: v2 GetSmtp and WatchSmtp from the followed profile, ResolveSmtp and
TestSmtp through the upstream, and a refusal for every write and provider call."""

from __future__ import annotations

from typing import Any, cast

import grpc

from smtpconfig.api import calls, convert
from smtpconfig.api.calls import Guard, rpc
from smtpconfig.api.provider_servicer import SecretProviderServiceV2
from smtpconfig.api.servicers import ConfigServiceV1
from smtpconfig.api.watch_servicer import WatchSmtpV2
from smtpconfig.core.errors import FailedPrecondition
from smtpconfig.domain.watch import ProfileWatch
from smtpconfig.edge.upstream import Followed, FollowedRevision, Upstream
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

AGE_TRAILER = "smtpconfig-profile-age-seconds"


def _follows(upstream: Upstream) -> FailedPrecondition:
    return FailedPrecondition(f"this server follows {upstream.name}; change the profile there")


class EdgeConfigServiceV2(WatchSmtpV2, v2_grpc.ConfigServiceServicer):
    """`smtpconfig.v2.ConfigService` on an edge."""

    SERVICE = "v2.ConfigService"

    def __init__(
        self, followed: Followed, upstream: Upstream, guard: Guard, watch: ProfileWatch, watch_max_age: float,
        upstream_timeout: float,
    ) -> None:
        self.guard = guard
        self._followed = followed
        self._upstream = upstream
        self._watch = watch
        self._watch_max_age = watch_max_age
        self._timeout = upstream_timeout
        # The followed revision GetSmtp last answered with, and that answer serialised.
        self._read: tuple[FollowedRevision | None, bytes] = (None, b"")

    def _watch_event(self, kind: int, stored: Any, revision: int) -> v2.WatchSmtpEvent:
        followed = cast(FollowedRevision | None, stored)
        if followed is None:
            return v2.WatchSmtpEvent(kind=kind, revision=revision)  # type: ignore[arg-type]  # the enum's int
        return v2.WatchSmtpEvent(
            kind=kind, profile=followed.shown, etag=followed.etag,  # type: ignore[arg-type]
            update_time=convert.timestamp(followed.updated_at), revision=followed.revision,
        )

    @rpc("smtp:read", waits=False)
    async def GetSmtp(self, request, context: grpc.aio.ServicerContext) -> bytes:
        calls.current().trailers = ((AGE_TRAILER, f"{self._followed.age():.0f}"),)
        followed = self._followed.get()
        if followed is not self._read[0]:  # serialised once per followed revision, as on a server
            self._read = (followed, v2.GetSmtpResponse(
                profile=followed.shown, etag=followed.etag, update_time=convert.timestamp(followed.updated_at)
            ).SerializeToString())
        return self._read[1]

    @rpc("smtp:modify", audit=True)
    async def UpdateSmtp(self, request, context: grpc.aio.ServicerContext):
        raise _follows(self._upstream)

    @rpc("smtp:test", audit=True, limit="test")
    async def TestSmtp(self, request: v2.TestSmtpRequest, context: grpc.aio.ServicerContext) -> v2.TestSmtpResponse:
        call = calls.current()
        response = await self._upstream.test(request, call.identity, self._timeout)
        call.note(message=f"test forwarded to {self._upstream.name}: {'sent' if response.success else 'failed'}")
        return response

    @rpc("smtp:resolve", audit=True, limit="resolve")
    async def ResolveSmtp(self, request, context: grpc.aio.ServicerContext) -> bytes:
        call = calls.current()
        refresh = request.refresh
        if refresh:
            call.note(message="refresh")  # a refused refresh is on record as one too
            self.guard.take("refresh", "one ResolveSmtp refresh per refresh_interval_seconds")
        resolved = await self._upstream.resolve(call.identity, self._timeout, refresh=refresh)
        refreshed = ", refresh: caches bypassed here and upstream" if refresh else ""
        call.note(fields=resolved.revealed, message=f"profile etag {resolved.etag} from {self._upstream.name}{refreshed}")
        # The upstream's answer without its cache_for, then what is left of it (see `Resolved`).
        return resolved.wire + convert.cache_for_field(resolved.left())


def _refusing(base: type, name: str) -> type:
    """A servicer of `base`'s service whose every method refuses (FAILED_PRECONDITION), each under
    the same permission and audit as on a server with a store."""
    members: dict[str, Any] = {"SERVICE": base.SERVICE}  # type: ignore[attr-defined]

    def init(self, upstream: Upstream, guard: Guard) -> None:
        self.guard = guard
        self._upstream = upstream

    members["__init__"] = init
    for attr in dir(base):
        spec = getattr(getattr(base, attr, None), "rpc_spec", None)
        if spec is None or spec.stream:
            continue

        async def refuse(self, request, context):
            raise _follows(self._upstream)

        refuse.rpc_spec = spec  # type: ignore[attr-defined]  # read back by the handlers
        members[attr] = refuse
    return type(name, (), members)


# Provider management: there are no provider instances here.
EdgeProviderServiceV2 = _refusing(SecretProviderServiceV2, "EdgeProviderServiceV2")


class EdgeConfigServiceV1(_refusing(ConfigServiceV1, "_RefusingV1"), v1_grpc.ConfigServiceServicer):  # type: ignore[misc]
    """`smtpconfig.v1.ConfigService` on an edge: GetSmtp in the upstream's v1 shape (fetched once
    per followed revision), TestSmtp forwarded, UpdateSmtp refused."""

    def __init__(self, upstream: Upstream, guard: Guard, upstream_timeout: float = 10.0) -> None:
        self.guard = guard
        self._upstream = upstream
        self._timeout = upstream_timeout

    @rpc("smtp:read", waits=False)
    async def GetSmtp(self, request, context: grpc.aio.ServicerContext) -> v1.GetSmtpResponse:
        return await self._upstream.get_v1(calls.current().identity, self._timeout)

    @rpc("smtp:test", audit=True, limit="test")
    async def TestSmtp(self, request: v1.TestSmtpRequest, context: grpc.aio.ServicerContext) -> v1.TestSmtpResponse:
        call = calls.current()
        response = await self._upstream.test_v1(request, call.identity, self._timeout)
        call.note(message=f"test forwarded to {self._upstream.name}: sent")  # v1 answers a failure as an error
        return response
