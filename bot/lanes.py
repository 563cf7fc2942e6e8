"""Per-farmer arrival order across gateway processes: a ticket lock per openid in Redis.

Each turn takes a ticket (INCR) and runs when the `served` counter reaches the ticket before it;
it then advances `served`. A holder that dies stops refreshing its heartbeat; a waiter that sees
neither progress nor a heartbeat for STALL_S skips the dead ticket, so nobody waits for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")
KEY_TTL_S = 3600
STALL_S = 3.0
POLL_S = 0.02
MAX_WAIT_S = 120.0
# served := max(served, ticket)
_ADVANCE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""
# served := old + 1, only if it is still old (skip one dead ticket)
_SKIP = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur == tonumber(ARGV[1]) then redis.call('SET', KEYS[1], cur + 1, 'EX', ARGV[2]) return 1 end
return 0
"""


class RedisLanes:
    """Run one farmer's calls one at a time, in ticket order, across processes."""

    def __init__(self, redis: Any, prefix: str = "ktp:lane:") -> None:
        self._redis = redis
        self._prefix = prefix
        self.skipped = 0

    def _keys(self, openid: str) -> tuple[str, str, str]:
        base = self._prefix + openid
        return base + ":tickets", base + ":served", base + ":busy"

    async def run(self, openid: str, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Wait for this farmer's earlier tickets, run `fn`, let the next one go."""
        tickets, served, busy = self._keys(openid)
        try:
            ticket = int(await self._redis.incr(tickets))
            await self._redis.expire(tickets, KEY_TTL_S)
            await self._wait_turn(ticket, served, busy)
        except (OSError, ValueError, TimeoutError, RedisError) as exc:
            # Redis trouble must not stop the farmer's answer: run without cross-process order.
            log.warning("lane for %s without Redis order: %r", openid, exc)
            return await fn()
        stop = asyncio.Event()
        beat = asyncio.create_task(self._beat(busy, stop))
        try:
            return await fn()
        finally:
            # Stopped, not cancelled: a Redis command cancelled half-way spoils its connection.
            stop.set()
            with contextlib.suppress(Exception):
                await beat
            with contextlib.suppress(Exception):
                await self._redis.delete(busy)  # before the next holder sets it
                await self._redis.eval(_ADVANCE, 1, served, ticket, KEY_TTL_S)

    async def _wait_turn(self, ticket: int, served: str, busy: str) -> None:
        deadline = time.monotonic() + MAX_WAIT_S
        last, since, warned = -1, time.monotonic(), False
        while time.monotonic() < deadline:
            now_served = int(await self._redis.get(served) or 0)
            if now_served >= ticket - 1:
                return
            now = time.monotonic()
            if now_served != last:
                last, since = now_served, now
            elif now - since > 10 * STALL_S and not warned:
                log.warning("lane wait: ticket %s, served %s, busy %s", ticket, now_served,
                            await self._redis.exists(busy))  # fmt: skip
                warned = True
            elif now - since > STALL_S and not await self._redis.exists(busy):
                if await self._redis.eval(_SKIP, 1, served, now_served, KEY_TTL_S):
                    self.skipped += 1
                since = now
            await asyncio.sleep(POLL_S)

    async def _beat(self, busy: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self._redis.set(busy, "1", ex=2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
