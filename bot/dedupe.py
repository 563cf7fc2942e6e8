"""Cross-process deduplication of WeChat retries (in-process retries share a future instead).

With REDIS_URL, the first process to see a MsgId claims it in Redis for a while; a retry that
lands in another process meanwhile waits for the first one's record. Without Redis, the unique
`messages.dedupe_key` is the arbiter: the loser of an insert race answers from the winner's row.
"""

from __future__ import annotations

import uuid
from typing import Any

CLAIM_TTL_S = 120  # longer than any answer may take before it is recorded


class RedisClaims:
    """MsgId claims in Redis, shared by every gateway process."""

    def __init__(self, redis: Any, prefix: str = "ktp:dedupe:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._me = uuid.uuid4().hex

    async def claim(self, key: str) -> bool:
        """True when this process is the first to handle `key`."""
        return bool(await self._redis.set(self._prefix + key, self._me, nx=True, ex=CLAIM_TTL_S))

    async def release(self, key: str) -> None:
        """Drop a claim after a failure, so that WeChat's next try is handled afresh."""
        name = self._prefix + key
        if await self._redis.get(name) in {self._me, self._me.encode()}:
            await self._redis.delete(name)
