"""Cross-process deduplication of WeChat retries (in-process retries share a future instead).

With REDIS_URL, the first process to see a MsgId claims it in Redis for a while; a retry that
lands in another process meanwhile waits for the first one's record. Without Redis, the unique
`messages.dedupe_key` is the arbiter: the loser of an insert race answers from the winner's row.

A claim names its holder and when it was taken. A holder is dead when the supervisor said so
(`worker_died`: it reaped the process, so a retry takes over at once) or when its short-lived
liveness key (`heartbeat`) has expired (the whole machine failed: the TTL is the fallback). A
claim of a dead holder may be taken over, so WeChat's next try is handled, not swallowed; the
new holder learns how long ago the first try began, and answers within what is left of the
farmer's 5 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

log = logging.getLogger(__name__)
CLAIM_TTL_S = 120  # longer than any answer may take before it is recorded
ALIVE_TTL_S = 3  # a process silent this long is taken for dead
DEAD_TTL_S = 3600  # the supervisor's word that a worker died (worker ids are never reused)
ALIVE_PREFIX, DEAD_PREFIX = "ktp:alive:", "ktp:dead:"
WORKER_ID_ENV = "KTP_WORKER_ID"  # set by the production supervisor, fresh for each start

# KEYS[1] the claim; ARGV: me, "me|now_ms", ttl, alive prefix, dead prefix.
# -> {0}: another live process holds it; {1}: claimed afresh; {2, since_ms}: taken over from a
# dead holder whose try began at since_ms ("" when the claim did not say).
# (The holder's liveness keys are not in KEYS: this runs on one Redis, not a cluster.)
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return {1} end
local who, since = string.match(cur, '^([^|]*)|?(.*)$')
if who == ARGV[1] then return {0} end
if redis.call('EXISTS', ARGV[4] .. who) == 1 and redis.call('EXISTS', ARGV[5] .. who) == 0 then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return {2, since}
"""
# Drop the claim only if this process holds it.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def worker_id() -> str | None:
    """This process's identity as the supervisor gave it (None outside production mode)."""
    return os.environ.get(WORKER_ID_ENV) or None


def worker_died(redis: Any, who: str) -> None:
    """The supervisor reaped worker `who` (a synchronous Redis client): say it is dead, so that
    its claims and lane tickets are taken over now rather than when its heartbeat expires."""
    pipe = redis.pipeline(transaction=True)
    pipe.set(DEAD_PREFIX + who, "1", ex=DEAD_TTL_S)
    pipe.delete(ALIVE_PREFIX + who)
    pipe.execute()


class RedisClaims:
    """MsgId claims in Redis, shared by every gateway process."""

    def __init__(self, redis: Any, prefix: str = "ktp:dedupe:", me: str | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._me = me or worker_id() or uuid.uuid4().hex
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self.takeovers = 0

    @property
    def me(self) -> str:
        """The holder name this process writes into its claims."""
        return self._me

    def _alive_key(self, who: str) -> str:
        return ALIVE_PREFIX + who

    async def beat(self) -> None:
        """Say this process is alive for ALIVE_TTL_S."""
        await self._redis.set(self._alive_key(self._me), "1", ex=ALIVE_TTL_S)

    async def heartbeat(self, every_s: float = 1.0) -> None:
        """Keep saying it, until cancelled."""
        while True:
            with contextlib.suppress(Exception):  # Redis down: claims cannot be taken anyway
                await self.beat()
            await asyncio.sleep(every_s)

    async def acquire(self, key: str) -> float | None:
        """Claim `key`: None when another live process holds it; else the seconds the farmer
        has already waited on an earlier try whose holder died (0.0 for a fresh claim)."""
        now_ms = int(time.time() * 1000)
        res = await self._claim(
            keys=[self._prefix + key],
            args=[self._me, f"{self._me}|{now_ms}", CLAIM_TTL_S, ALIVE_PREFIX, DEAD_PREFIX],
        )
        kind = int(res[0])
        if kind == 0:
            return None
        if kind == 1:
            return 0.0
        self.takeovers += 1
        raw = res[1] if len(res) > 1 else b""
        since = raw.decode() if isinstance(raw, bytes) else str(raw)
        spent = max(0.0, (now_ms - int(since)) / 1000) if since.isdigit() else 0.0
        log.info("claim of %s taken over from a dead worker (first try %.2f s ago)", key, spent)
        return spent

    async def claim(self, key: str) -> bool:
        """True when this process is the first to handle `key`, or its holder died."""
        return await self.acquire(key) is not None

    async def release(self, key: str) -> None:
        """Drop a claim after a failure, so that WeChat's next try is handled afresh."""
        await self._release(keys=[self._prefix + key], args=[self._me])
