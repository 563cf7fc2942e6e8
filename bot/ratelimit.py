"""Per-farmer rate limit: a token bucket per openid, so a flood from one does not starve others."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


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

    async def allow_async(self, openid: str) -> bool:
        """The same, with the signature of the shared (Redis) limiter."""
        return self.allow(openid)


# KEYS[1] bucket; ARGV: burst, rate per s, now (s) -> 1 allowed / 0 refused
_BUCKET = """
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local burst, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, at = tonumber(b[1] or ARGV[1]), tonumber(b[2] or ARGV[3])
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1 ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return ok
"""


class RedisRateLimiter:
    """The token bucket per openid, in Redis, so that every gateway process shares it."""

    def __init__(
        self, redis: Any, burst: int = 8, rate_per_s: float = 0.5, prefix: str = "ktp:rl:"
    ) -> None:
        self._redis = redis
        self._burst = burst
        self._rate = rate_per_s
        self._prefix = prefix
        self._bucket = redis.register_script(_BUCKET)  # EVALSHA: the script is not resent

    async def allow_async(self, openid: str) -> bool:
        """Take one token; on a Redis failure, allow (a limiter must not drop messages)."""
        try:
            ok = await self._bucket(
                keys=[self._prefix + openid], args=[self._burst, self._rate, time.time()]
            )
        except Exception:
            return True
        return bool(int(ok))
