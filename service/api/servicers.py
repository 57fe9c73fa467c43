"""Thin gRPC servicers for both API versions: proto to domain, call the domain, domain to proto."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Generic, TypeVar

import grpc

from smtpconfig.api import calls, convert
from smtpconfig.api.calls import Guard, rpc
from smtpconfig.api.watch_servicer import WatchSmtpV2
from smtpconfig.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Unavailable
from smtpconfig.domain.model import FIELDS, V1_FIELDS, Profile, ProfileDraft
from smtpconfig.domain.profiles import ProfileService, StoredProfile, parse_mask
from smtpconfig.domain.watch import ProfileWatch
from smtpconfig.outbound import reach
from smtpconfig.outbound.apply import Applier, succeeded
from smtpconfig.outbound.smtp_check import FAILED, OK, SKIPPED, Step
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc


class _PerRevision:
    """The GetSmtp response of the current revision, built (and serialised) once: reads far
    outnumber writes, and a revision never changes, so every read of it can share one answer."""

    def __init__(self, build) -> None:
        self._build = build
        self._revision = -1
        self._response = None
        self._wire = b""

    def __call__(self, stored: StoredProfile):
        """The response message (which ResolveSmtp's answer takes its profile from)."""
        if stored.revision != self._revision:
            self._rebuild(stored)
        return self._response

    def wire(self, stored: StoredProfile) -> bytes:
        """The response as it goes on the wire, which the handlers send as it is."""
        self(stored)
        return self._wire

    def _rebuild(self, stored: StoredProfile) -> None:
        response = self._build(stored)
        self._response, self._wire, self._revision = response, response.SerializeToString(), stored.revision


class _Revealed:
    """ResolveSmtp's answer for one stored revision and the credentials it resolved to, serialised
    once, with what its audit record names. Each call appends its own `cache_for`, the one part
    that changes from call to call (a message's fields may come in any order on the wire). New
    values (a rotation, a refresh, a new token) or a new revision build it anew.

    The bytes hold the revealed values, as the message they are made from would; they stay in
    this one place until the next different answer replaces them."""

    def __init__(self, read) -> None:
        self._read = read  # the revision's GetSmtp answer, whose profile ResolveSmtp's shows
        self._key: tuple = ()
        self._static = b""
        self._fields: tuple[str, ...] = ()
        self._note = ""

    def __call__(self, stored: StoredProfile, credentials) -> tuple[bytes, tuple[str, ...], str]:
        """The answer's bytes, the fields it reveals and the note for its record."""
        token = credentials.token
        key = (stored, credentials.username, credentials.password, token)
        if key != self._key:  # identical objects compare equal without a look inside
            self._build(stored, credentials)
            self._key = key
        return self._static + convert.cache_for_field(credentials.cache_for), self._fields, self._note

    def _build(self, stored: StoredProfile, credentials) -> None:
        response = v2.ResolveSmtpResponse(profile=self._read(stored).profile, etag=stored.etag)
        revealed = []
        if credentials.username is not None and credentials.password is not None:
            response.credentials.username = credentials.username.reveal()
            response.credentials.password = credentials.password.reveal()
            revealed += ["RelayUsername", "RelayPassword"]
        token = credentials.token
        if token is not None:
            response.credentials.access_token = token.value.reveal()
            response.credentials.token_type = token.token_type
            response.credentials.token_expire_time.FromDatetime(token.expires_at)
            revealed += ["AccessToken"]
        self._static = response.SerializeToString()
        self._fields = tuple(revealed)
        self._note = f"profile etag {stored.etag}"


def _mask(request, allowed) -> tuple[frozenset[str] | None, list]:
    if not request.HasField("update_mask") or not request.update_mask.paths:
        return None, []
    return parse_mask(request.update_mask.paths, allowed)


Shown = TypeVar("Shown", v1.SmtpProfile, v2.SmtpProfile)

_OUTCOMES = {OK: v2.STEP_OUTCOME_OK, FAILED: v2.STEP_OUTCOME_FAILED, SKIPPED: v2.STEP_OUTCOME_SKIPPED}


def _step_to_v2(step: Step) -> v2.TestStep:
    return v2.TestStep(
        name=step.name, outcome=_OUTCOMES[step.outcome], duration=convert.duration(step.duration),
        smtp_code=step.smtp_code, message=step.message, hint=step.hint,
    )


def _note_test(request, profile: Profile, steps: list[Step] | None = None) -> None:
    """The test's record: which profile, its destinations and the credentials it takes from
    providers; once it ran, the recipient (checked by then) and how it ended."""
    what = "the request's profile" if request.HasField("profile") else "the stored profile"
    named = reach.named_credentials(profile)
    taken = "; ".join(f"{field} from {origin}" for field, origin in named.items()) or "no provider references"
    where = f"via {reach.destinations(profile)} ({taken})"
    if steps is None:
        calls.current().note(fields=list(named), message=f"test of {what} {where}")
        return
    ending = "sent" if succeeded(steps) else f"{steps[-1].name} step failed"
    calls.current().note(fields=list(named), message=f"test of {what} to {request.test_recipient} {where}: {ending}")


def _check_reach(request, profile: Profile, profiles: ProfileService) -> None:
    """Put the test's destinations on its record, then refuse a candidate profile that would send
    credentials the caller did not type anywhere but the stored profile's destinations."""
    _note_test(request, profile)
    if not request.HasField("profile"):
        return  # the stored profile goes to its own destinations
    try:
        stored: Profile | None = profiles.get().profile
    except NotFound:
        stored = None
    reach.check_test_reach(profile, stored, calls.current().holds(reach.RESOLVE))


def _readable(profile: Shown) -> Shown | None:
    """UpdateSmtp's reply shows the profile only to callers who may read it: smtp:modify alone
    writes blind."""
    return profile if calls.current().holds("smtp:read") else None


class _ConfigService(Generic[Shown]):
    """`ConfigService` as both API versions serve it: one flow over the one stored profile. A
    version names its service, the fields its update mask may name and its response messages, and
    converts profiles (`_draft`, `_shown`) and test results (`_tested`) to and from its messages."""

    SERVICE: ClassVar[str]
    MASKABLE: ClassVar[Iterable[str]]
    # The version's GetSmtpResponse and UpdateSmtpResponse, which hold the same three fields.
    GET_RESPONSE: ClassVar[type]
    UPDATE_RESPONSE: ClassVar[type]

    def __init__(self, profiles: ProfileService, applier: Applier, guard: Guard) -> None:
        self.guard = guard
        self._profiles = profiles
        self._applier = applier
        self._read = _PerRevision(self._get_response)

    def _get_response(self, stored: StoredProfile):
        return self.GET_RESPONSE(
            profile=self._shown(stored.profile), etag=stored.etag, update_time=convert.timestamp(stored.updated_at)
        )

    def _draft(self, msg: Shown, mask: frozenset[str] | None) -> tuple[ProfileDraft, list[FieldViolation]]:
        """The draft `msg` states, and the violations found while converting it."""
        raise NotImplementedError

    def _shown(self, profile: Profile) -> Shown:
        raise NotImplementedError

    def _tested(self, request, profile: Profile, steps: list[Step]):
        """The TestSmtp answer once the test has run, its record noted."""
        raise NotImplementedError

    @rpc("smtp:read", waits=False)
    async def GetSmtp(self, request, context: grpc.aio.ServicerContext) -> bytes:
        return self._read.wire(self._profiles.get())

    @rpc("smtp:modify", audit=True)
    async def UpdateSmtp(self, request, context: grpc.aio.ServicerContext):
        mask, problems = _mask(request, self.MASKABLE)
        draft, earlier = self._draft(request.profile, mask)
        if problems:
            raise InvalidArgument(problems + earlier)
        stored, _ = await self._profiles.update(
            draft, mask=mask, etag=request.etag, earlier=earlier, audit=calls.current().change_record
        )
        return self.UPDATE_RESPONSE(
            profile=_readable(self._shown(stored.profile)),
            etag=stored.etag,
            update_time=convert.timestamp(stored.updated_at),
        )

    @rpc("smtp:test", audit=True, limit="test")
    async def TestSmtp(self, request, context: grpc.aio.ServicerContext):
        if request.HasField("profile"):
            draft, problems = self._draft(request.profile, None)
            profile = self._profiles.check(draft, problems)
        else:
            profile = self._profiles.get().profile
        _check_reach(request, profile, self._profiles)
        steps = await self._applier.test(profile, request.test_recipient)
        return self._tested(request, profile, steps)


class ConfigServiceV2(_ConfigService[v2.SmtpProfile], WatchSmtpV2, v2_grpc.ConfigServiceServicer):
    """`smtpconfig.v2.ConfigService`."""

    SERVICE = "v2.ConfigService"
    MASKABLE = FIELDS
    GET_RESPONSE = v2.GetSmtpResponse
    UPDATE_RESPONSE = v2.UpdateSmtpResponse

    def __init__(
        self, profiles: ProfileService, applier: Applier, guard: Guard,
        watch: ProfileWatch | None = None, watch_max_age: float = 600.0,
    ) -> None:
        super().__init__(profiles, applier, guard)
        self._watch = watch
        self._watch_max_age = watch_max_age
        self._revealed = _Revealed(self._read)

    def _draft(
        self, msg: v2.SmtpProfile, mask: frozenset[str] | None
    ) -> tuple[ProfileDraft, list[FieldViolation]]:
        return convert.draft_from_v2(msg), []

    def _shown(self, profile: Profile) -> v2.SmtpProfile:
        return convert.profile_to_v2(profile)

    def _tested(self, request: v2.TestSmtpRequest, profile: Profile, steps: list[Step]) -> v2.TestSmtpResponse:
        _note_test(request, profile, steps)
        return v2.TestSmtpResponse(success=succeeded(steps), steps=[_step_to_v2(s) for s in steps])

    @rpc("smtp:resolve", audit=True, limit="resolve")
    async def ResolveSmtp(self, request, context: grpc.aio.ServicerContext) -> bytes:
        refresh = request.refresh
        if refresh:
            calls.current().note(message="refresh")  # a refused refresh is on record as one too
            self.guard.take("refresh", "one ResolveSmtp refresh per refresh_interval_seconds")
        stored = self._profiles.get()
        credentials = await self._applier.credentials(stored.profile, refresh=refresh)
        # A ResolveSmtpResponse, serialised (`_Revealed`); the handlers send bytes as they are.
        answer, revealed, note = self._revealed(stored, credentials)
        calls.current().note(fields=revealed, message=note + (", refresh: caches bypassed" if refresh else ""))
        return answer


class ConfigServiceV1(_ConfigService[v1.SmtpProfile], v1_grpc.ConfigServiceServicer):
    """`smtpconfig.v1.ConfigService`: Keyfactor's v1 contract over the same stored profile."""

    SERVICE = "v1.ConfigService"
    MASKABLE = V1_FIELDS
    GET_RESPONSE = v1.GetSmtpResponse
    UPDATE_RESPONSE = v1.UpdateSmtpResponse

    def _draft(
        self, msg: v1.SmtpProfile, mask: frozenset[str] | None
    ) -> tuple[ProfileDraft, list[FieldViolation]]:
        # v1's own rules (Id, OAuth) are judged here; the domain adds its findings to these.
        return convert.draft_from_v1(msg, mask)

    def _shown(self, profile: Profile) -> v1.SmtpProfile:
        return convert.profile_to_v1(profile)

    def _tested(self, request: v1.TestSmtpRequest, profile: Profile, steps: list[Step]) -> v1.TestSmtpResponse:
        if not succeeded(steps):
            # The record keeps the destinations noted above and adds this error, which names the step.
            failed = steps[-1]
            text = f"{failed.name} step failed: {failed.message}" + (f" ({failed.hint})" if failed.hint else "")
            raise (Unavailable if failed.name == "connect" else FailedPrecondition)(text)
        _note_test(request, profile, steps)
        # The profile tested, as Keyfactor echoes it: the caller's own candidate, or the stored
        # one only to a caller who may read it.
        shown = convert.profile_to_v1(profile)
        return v1.TestSmtpResponse(
            profile=shown if request.HasField("profile") else _readable(shown), test_recipient=request.test_recipient
        )
