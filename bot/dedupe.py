"""Cross-process deduplication of WeChat retries (in-process retries share a future instead).

With REDIS_URL, the first process to see a MsgId claims it in Redis for a while; a retry that
lands in another process meanwhile waits for the first one's record. Without Redis, the unique
`messages.dedupe_key` is the arbiter: the loser of an insert race answers from the winner's row.

Each process keeps a short-lived liveness key (`heartbeat`); a claim held by a process whose key
has expired (it was killed) may be taken over, so WeChat's next try is handled, not swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

CLAIM_TTL_S = 120  # longer than any answer may take before it is recorded
ALIVE_TTL_S = 3  # a process silent this long is taken for dead
# Replace the claim only if it still names the same (dead) holder.
_TAKEOVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end
return 0
"""


class RedisClaims:
    """MsgId claims in Redis, shared by every gateway process."""

    def __init__(self, redis: Any, prefix: str = "ktp:dedupe:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._me = uuid.uuid4().hex
        self.takeovers = 0

    def _alive_key(self, who: str) -> str:
        return f"ktp:alive:{who}"

    async def beat(self) -> None:
        """Say this process is alive for ALIVE_TTL_S."""
        await self._redis.set(self._alive_key(self._me), "1", ex=ALIVE_TTL_S)

    async def heartbeat(self, every_s: float = 1.0) -> None:
        """Keep saying it, until cancelled."""
        while True:
            with contextlib.suppress(Exception):  # Redis down: claims cannot be taken anyway
                await self.beat()
            await asyncio.sleep(every_s)

    async def claim(self, key: str) -> bool:
        """True when this process is the first to handle `key`, or its holder died."""
        name = self._prefix + key
        if await self._redis.set(name, self._me, nx=True, ex=CLAIM_TTL_S):
            return True
        holder = await self._redis.get(name)
        if holder is None:
            return bool(await self._redis.set(name, self._me, nx=True, ex=CLAIM_TTL_S))
        who = holder.decode() if isinstance(holder, bytes) else str(holder)
        if who == self._me or await self._redis.exists(self._alive_key(who)):
            return False
        took = await self._redis.eval(_TAKEOVER, 1, name, who, self._me, CLAIM_TTL_S)
        if took:
            self.takeovers += 1
        return bool(took)

    async def release(self, key: str) -> None:
        """Drop a claim after a failure, so that WeChat's next try is handled afresh."""
        name = self._prefix + key
        if await self._redis.get(name) in {self._me, self._me.encode()}:
            await self._redis.delete(name)
