"""Per-identity rate limits: one token bucket per caller identity and limited method group."""

from __future__ import annotations

import time
from collections import OrderedDict

# Identities are few when they come from tokens and the socket, but any certificate the client CA
# signs is one: the table of buckets is bounded so that cannot grow memory without end.
_MAX_IDENTITIES = 10_000


class RateLimiter:
    """`rate` calls per second per identity, with bursts of up to `burst`. Rate 0: no limit."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, identity: str) -> float:
        """Take one call for `identity`: 0.0 when allowed, else seconds until one would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[identity] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[identity] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        if len(self._buckets) > _MAX_IDENTITIES:
            self._buckets.popitem(last=False)
        return wait
