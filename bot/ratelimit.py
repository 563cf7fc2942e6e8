"""Per-farmer rate limit: a token bucket per openid, so a flood from one does not starve others."""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    """`burst` messages at once, then one every `1/rate_per_s` seconds, per openid."""

    def __init__(self, burst: int = 8, rate_per_s: float = 0.5, max_farmers: int = 100_000) -> None:
        self._burst = float(burst)
        self._rate = rate_per_s
        self._max = max_farmers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, openid: str, now: float | None = None) -> bool:
        """Take one token from the farmer's bucket; False when it is empty."""
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(openid, (self._burst, t))
        tokens = min(self._burst, tokens + (t - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[openid] = (tokens - 1.0 if allowed else tokens, t)
        while len(self._buckets) > self._max:  # forget the longest-idle farmers
            self._buckets.popitem(last=False)
        return allowed
