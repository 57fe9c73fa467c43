"""The profile use cases, independent of API version: read, full replace, masked update, etags.

The current revision is kept decoded in memory (reads never touch the disk) and follows the store's
change notifications, so a shared store's writes by other replicas show up here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from smtpconfig.core.aio import stop_task
from smtpconfig.core.errors import Aborted, FieldViolation, InvalidArgument, NotFound, Unavailable, violation
from smtpconfig.domain.catalog import ProviderCatalog
from smtpconfig.domain.codec import decode_profile, encode_profile
from smtpconfig.domain.crypto import Sealer
from smtpconfig.domain.model import (
    CREDENTIAL_FIELDS,
    CREDENTIALS_FOR,
    FIELDS,
    SENT_TO,
    InlineSecret,
    KeepStored,
    Profile,
    ProfileDraft,
    ProviderRef,
    SecretInput,
)
from smtpconfig.domain.validation import validate
from smtpconfig.store.base import ABSENT, AuditHook, Change, EtagMismatch, Resync, Revision, Store

log = logging.getLogger(__name__)

PROFILE_KEY = "smtp/profile/1"

# How often an update without a client etag re-merges after losing a race before giving up.
_MAX_RETRIES = 16


@dataclass(frozen=True)
class StoredProfile:
    """A profile revision as stored."""

    profile: Profile
    etag: str
    revision: int
    updated_at: datetime


def parse_mask(paths: Iterable[str], allowed: Iterable[str]) -> tuple[frozenset[str], list[FieldViolation]]:
    """Normalise update-mask paths (proto or Keyfactor JSON names) to proto field names."""
    allowed = tuple(allowed)
    by_name = {name: name for name in allowed} | {FIELDS[name]: name for name in allowed}
    fields: set[str] = set()
    problems = []
    for path in paths:
        name = by_name.get(path)
        if name is None:
            hint = "; secret objects are replaced whole" if "." in path else ""
            problems.append(violation("update_mask", f"{path!r} is not a field of this profile{hint}"))
        else:
            fields.add(name)
    return frozenset(fields), problems


class ProfileService:
    """Reads and changes the one SMTP profile."""

    def __init__(
        self, store: Store, sealer: Sealer, providers: ProviderCatalog, write_lock: asyncio.Lock | None = None
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._providers = providers
        self._current: StoredProfile | None = None
        self._follower: asyncio.Task | None = None
        # Shared with provider instance writes: a reference and a delete never interleave.
        self._write_lock = write_lock or asyncio.Lock()
        # Told of every revision this replica takes up, in revision order (WatchSmtp).
        self._listeners: list[Callable[[StoredProfile], None]] = []

    async def start(self) -> None:
        """Load the stored revision (failing loudly on a wrong key) and follow changes from the
        store revision read before it, so that no change made meanwhile (by another replica) is
        missed."""
        at = await self._store.revision()
        revision = await self._store.get(PROFILE_KEY)
        if revision is not None:
            self._apply(revision)
        changes = self._store.watch(PROFILE_KEY, after=at)
        self._follower = asyncio.create_task(self._follow(changes), name="profile-follower")

    async def stop(self) -> None:
        await stop_task(self._follower)

    async def _follow(self, changes) -> None:
        async for change in changes:
            if isinstance(change, Resync):  # the store lost history this replica needed
                await self._resync()
            elif change.revision is not None:
                self._apply(change.revision)

    async def _resync(self) -> None:
        """Re-read the profile, retrying until the store answers: a follower must not stop."""
        delay = 0.1
        while True:
            try:
                await self._reload()
                return
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _apply(self, revision: Revision, profile: Profile | None = None) -> StoredProfile:
        current = self._current
        if current is not None and current.revision >= revision.revision:
            return current
        if profile is None:
            profile = decode_profile(revision.value, self._sealer, PROFILE_KEY)
        self._current = StoredProfile(profile, revision.etag, revision.revision, revision.updated_at)
        for listener in self._listeners:
            listener(self._current)
        return self._current

    def on_change(self, listener: Callable[[StoredProfile], None]) -> Callable[[], None]:
        """Call `listener` with every revision this replica takes up from now on, in revision
        order, as it takes it up; returns what stops that."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def current(self) -> StoredProfile | None:
        """The current revision, or None before the first update."""
        return self._current

    async def catch_up(self) -> int:
        """Read the store's revision, then take up every change of the profile up to it that
        the follower has not delivered yet; returns that revision. Afterwards nothing at or below
        it is still to come, so it can be announced as "no change up to here"."""
        revision = await self._store.revision()
        current = self._current
        changes = await self._store.history(PROFILE_KEY, current.revision if current else 0)
        if changes is None:
            await self._reload()
        else:
            for change in changes:
                if change.revision is not None:
                    self._apply(change.revision)
        return revision

    async def changes_after(self, after: int) -> list[StoredProfile] | None:
        """Every revision of the profile written after revision `after`, oldest first, or None
        when the store no longer knows them all."""
        changes = await self._store.history(PROFILE_KEY, after)
        if changes is None:
            return None
        return [
            StoredProfile(decode_profile(c.revision.value, self._sealer, PROFILE_KEY), c.revision.etag,
                          c.revision.revision, c.revision.updated_at)
            for c in changes if c.revision is not None
        ]

    def get(self) -> StoredProfile:
        """The current revision; NotFound before the first update. First takes up what other
        processes sharing the store have acknowledged (`Store.settle`), so that a write one worker
        has answered is what every worker reads."""
        for change in self._store.settle():
            if isinstance(change, Change) and change.key == PROFILE_KEY and change.revision is not None:
                self._apply(change.revision)
        if self._current is None:
            raise NotFound("no SMTP profile is stored yet; set one with UpdateSmtp")
        return self._current

    def check(self, draft: ProfileDraft, earlier: list[FieldViolation] | None = None) -> Profile:
        """The valid profile a draft states, without storing it (TestSmtp takes one)."""
        return validate(draft, self._providers, earlier)

    def referenced_providers(self) -> set[int]:
        """Ids of the provider instances the stored profile references."""
        if self._current is None:
            return set()
        return {s.provider for s in self._current.profile.secret_fields().values() if isinstance(s, ProviderRef)}

    async def update(
        self,
        draft: ProfileDraft,
        *,
        mask: frozenset[str] | None = None,
        etag: str = "",
        earlier: list[FieldViolation] | None = None,
        audit: AuditHook | None = None,
    ) -> tuple[StoredProfile, list[str]]:
        """Store `draft` (whole, or only the `mask` fields), returning the new revision and the
        Keyfactor names of the fields that changed. With `etag`, only on top of that revision.
        `audit` gives the audit record stored atomically with the change."""
        # One read-merge-write at a time in this process: local writers queue instead of racing.
        # The compare-and-set below still guards against writers elsewhere (other replicas).
        async with self._write_lock:
            return await self._update(draft, mask, etag, earlier, audit)

    async def _update(self, draft, mask, etag, earlier, audit) -> tuple[StoredProfile, list[str]]:
        for _ in range(_MAX_RETRIES):
            current = self._current
            if etag and (current is None or current.etag != etag):
                raise Aborted("the profile changed since that etag was read; read it again")
            merged = self._merge(draft, mask, current, etag)
            profile = validate(merged, self._providers, earlier)
            data = encode_profile(profile, self._sealer, PROFILE_KEY)
            expected = current.etag if current is not None else ABSENT
            changed = _changed_fields(current.profile if current else None, profile)
            try:
                revision = await self._store.put(PROFILE_KEY, data, expected, audit and audit(changed))
            except EtagMismatch:
                if etag:
                    raise Aborted("the profile changed since that etag was read; read it again") from None
                await self._reload()
                continue
            stored = self._apply(revision, profile)
            log.info("profile updated to revision %s; changed: %s", revision.revision, ", ".join(changed) or "nothing")
            return stored, changed
        raise Aborted("the profile is changing too fast to apply this update; try again")

    async def _reload(self) -> None:
        revision = await self._store.get(PROFILE_KEY)
        if revision is not None:
            self._apply(revision)

    @staticmethod
    def _merge(
        draft: ProfileDraft, mask: frozenset[str] | None, current: StoredProfile | None, etag: str
    ) -> ProfileDraft:
        if mask is not None:
            base = ProfileDraft.of(current.profile) if current else ProfileDraft()
            draft = replace(base, **{name: getattr(draft, name) for name in mask})
        keep: dict[str, SecretInput] = {}
        problems = []
        used = CREDENTIALS_FOR.get(draft.relay_authentication_type, CREDENTIAL_FIELDS)
        for name in CREDENTIAL_FIELDS:
            given = getattr(draft, name)
            # v1 sends `UnsupportedPAMSecret` back for a provider-held username: keep the reference.
            if given is KeepStored.TOKEN and current is not None:
                stored = getattr(current.profile, name)
                if isinstance(stored, ProviderRef):
                    keep[name] = stored
            elif given is KeepStored.VALUE:
                kept = _kept_value(name, draft, current, etag) if name in used else None
                if isinstance(kept, FieldViolation):
                    problems.append(kept)
                else:
                    keep[name] = kept
        if problems:
            raise InvalidArgument(problems)
        # Keys are CREDENTIAL_FIELDS, each typed SecretInput; mypy checks `**` against every field.
        return replace(draft, **keep) if keep else draft  # type: ignore[arg-type]


def _kept_value(
    name: str, draft: ProfileDraft, current: StoredProfile | None, etag: str
) -> InlineSecret | FieldViolation:
    """The stored inline value a `{"HasValue": true}` sent back stands for, or why it cannot be
    kept. Like a GET followed by a PUT of what it returned: only with the etag of that GET (the
    caller saw this very value marked), and only to the same destination, so a write never sends
    a stored secret to a host it was not typed for."""
    field = f"{FIELDS[name]}.HasValue"
    if not etag:
        return violation(
            field, "keeps the stored value only in an update that sends the etag of the revision it was read from"
        )
    stored = getattr(current.profile, name) if current is not None else None
    if current is None or not isinstance(stored, InlineSecret):
        return violation(field, "no inline value is stored for this field; send SecretValue or Provider")
    moved = [FIELDS[d] for d in SENT_TO[name] if _moved(d, getattr(draft, d), getattr(current.profile, d))]
    if moved:
        return violation(
            field,
            f"a stored value stays with its destination, and {' and '.join(moved)} changed; send the value again",
        )
    return stored


def _moved(destination: str, draft: object, stored: object) -> bool:
    """Whether the draft sends a credential elsewhere than the stored profile: TLS may be kept or
    added, never dropped; every other destination must stay as stored."""
    if destination == "use_ssl":
        return bool(stored) and not draft
    return draft != stored


def _changed_fields(before: Profile | None, after: Profile) -> list[str]:
    names = [n for n in FIELDS if n != "id"]
    if before is None:
        return [FIELDS[n] for n in names if getattr(after, n) not in (None, "", (), False)]
    return [FIELDS[n] for n in names if getattr(before, n) != getattr(after, n)]


