"""Which audited calls that ended before their method started get an audit record: each, up to a
rate per caller.

A call ends before its method starts when it is refused (no identity, no permission, a slot or rate
limit, a request message missing, doubled or undecodable) or when it is cancelled or runs out of
time while its message is awaited. Either way it did nothing and cost its caller nothing (no
permission, no valid request, not even a message), so without a cap one caller could fill the disk
with records of them. Callers with an identity each have a bucket (`audit_refusals_rate`,
`audit_refusals_burst`); callers with none share one, since anyone who reaches the port is one of
them. A call over the cap is counted in the metrics as ``<CODE>_NOT_RECORDED`` (CANCELLED and
DEADLINE_EXCEEDED included) and reported in the log at most once per `REPORT_EVERY` seconds per
identity, with how many went unrecorded, so a flood is seen without flooding the log in turn.

Only those calls are capped. Once the method has started, the call may have acted (a change, a test
that reached a relay, a resolution or check that reached a backend), so its outcome is always
recorded, whatever its code: a caller cannot spend the cap first to hide what it did next.
`smtpconfig.api.calls.Guard` decides which side of that line a call ended on.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from smtpconfig.api.limits import RateLimiter
from smtpconfig.core.clip import one_line

log = logging.getLogger(__name__)

REPORT_EVERY = 60.0
# As many identities as the rate limiter keeps buckets for; the oldest report is forgotten first.
_MAX_IDENTITIES = 10_000


class RefusalRecords:
    """Decides, call by call, whether a call that ended before its method started is recorded;
    counts and reports those that are not."""

    def __init__(self, anonymous: RateLimiter, identified: RateLimiter, metrics) -> None:
        self._anonymous = anonymous
        self._identified = identified
        self._metrics = metrics
        # identity -> (refusals not recorded since the last report, when that report was)
        self._unreported: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def admit(self, identity: str, code: str) -> bool:
        """Whether `identity`'s call that ended with status `code` before its method started gets
        its audit record."""
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
