"""Which refused calls of audited methods get an audit record: each, up to a rate per caller.

A refusal costs its caller nothing (no permission needed, no valid request), so without a cap one
caller could fill the disk with records of them. Callers with an identity each have a bucket
(`audit_refusals_rate`, `audit_refusals_burst`); callers with none share one, since anyone who
reaches the port is one of them. A refusal over the cap is counted in the metrics as
``<CODE>_NOT_RECORDED`` and reported in the log at most once per `REPORT_EVERY` seconds per
identity, with how many went unrecorded, so a flood is seen without flooding the log in turn.

Only refusals are capped: calls turned away before they did anything. Outcomes after which a call
may have acted (a change, a test that reached a relay, a resolution that reached a backend) are
always recorded, so a caller cannot spend the cap first to hide what it did next.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from service.clip import one_line
from service.limits import RateLimiter

log = logging.getLogger(__name__)

REFUSALS = frozenset({
    "UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "ABORTED",
    "NOT_FOUND", "UNIMPLEMENTED",
})
REPORT_EVERY = 60.0
# As many identities as the rate limiter keeps buckets for; the oldest report is forgotten first.
_MAX_IDENTITIES = 10_000


class RefusalRecords:
    """Decides, call by call, whether a refusal is recorded; counts and reports those that are not."""

    def __init__(self, anonymous: RateLimiter, identified: RateLimiter, metrics) -> None:
        self._anonymous = anonymous
        self._identified = identified
        self._metrics = metrics
        # identity -> (refusals not recorded since the last report, when that report was)
        self._unreported: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def admit(self, identity: str, code: str) -> bool:
        """Whether the refusal of `identity`'s call with status `code` gets its audit record."""
        if code not in REFUSALS:
            return True
        limiter = self._identified if identity else self._anonymous
        if limiter.acquire(identity) == 0.0:
            return True
        self._metrics.audit_record(f"{code}_NOT_RECORDED")
        self._report(identity)
        return False

    def _report(self, identity: str) -> None:
        now = time.monotonic()
        count, reported = self._unreported.pop(identity, (0, float("-inf")))
        count += 1
        if now - reported >= REPORT_EVERY:
            log.warning(
                "refusals of %s are over the audit record cap: %d not recorded since the last report"
                " (counted in smtpconfig_audit_records_total as <CODE>_NOT_RECORDED)",
                repr(one_line(identity, 256)) if identity else "callers without an identity", count,
            )
            count, reported = 0, now
        self._unreported[identity] = (count, reported)
        if len(self._unreported) > _MAX_IDENTITIES:
            self._unreported.popitem(last=False)
