"""Per-farmer arrival order across gateway processes: a ticket lock per openid in Redis.

Each turn takes a ticket (INCR) and runs when the `served` counter reaches the ticket before it;
it then advances `served`. Each ticket names its holder. A waiter skips the tickets of holders
the supervisor reported dead (`bot.dedupe.worker_died`) at once. Without that word (the whole
machine failed, or no supervisor), a holder that dies stops refreshing its `busy` key; a waiter
that sees neither progress nor `busy` for STALL_S skips the dead ticket, so nobody waits for
ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

from bot.dedupe import DEAD_PREFIX, worker_id

log = logging.getLogger(__name__)
T = TypeVar("T")
KEY_TTL_S = 3600
STALL_S = 3.0
POLL_S = 0.02
MAX_WAIT_S = 120.0
BUSY_TTL_S, BEAT_S = 2, 0.5  # a holder's `busy` key, refreshed every BEAT_S
# The served counter after skipping the tickets before ours whose holders are known dead (or
# gave them up: holder `-`); when it is our turn, `busy` says so at once (the holder's beat
# refreshes it). KEYS served, owners, busy; `ticket`; ARGV[2] dead prefix, [3] ttl, [4] busy ttl.
_TURN = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local skipped = 0
while cur < ticket - 1 do
  local owner = redis.call('HGET', KEYS[2], cur + 1)
  if not owner then break end
  if owner ~= '-' and redis.call('EXISTS', ARGV[2] .. owner) == 0 then break end
  cur = cur + 1
  redis.call('HDEL', KEYS[2], cur)
  skipped = skipped + 1
end
if skipped > 0 then redis.call('SET', KEYS[1], cur, 'EX', ARGV[3]) end
if cur >= ticket - 1 then redis.call('SET', KEYS[3], '1', 'EX', ARGV[4]) end
return {ticket, cur, skipped}
"""
# KEYS served, owners, busy, tickets; ARGV me, dead prefix, ttl, busy ttl -> {ticket, served,
# skipped}: a new ticket recorded as `me`'s, and the first look at whose turn it is.
_NEW_TICKET = """
local ticket = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('HSET', KEYS[2], ticket, ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
"""
_TICKET = _NEW_TICKET + _TURN
# KEYS served, owners, busy; ARGV ticket, dead prefix, ttl, busy ttl -> {ticket, served, skipped}
_POLL = "local ticket = tonumber(ARGV[1])\n" + _TURN
# KEYS served, owners, busy; ARGV ticket, ttl: done. served := max(served, ticket)
_DONE = """
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
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

    def __init__(self, redis: Any, prefix: str = "ktp:lane:", me: str | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._me = me or worker_id() or uuid.uuid4().hex
        self._ticket = redis.register_script(_TICKET)
        self._poll = redis.register_script(_POLL)
        self._done = redis.register_script(_DONE)
        self.skipped = 0

    def _keys(self, openid: str) -> tuple[str, str, str, str]:
        base = self._prefix + openid
        return base + ":tickets", base + ":served", base + ":busy", base + ":owners"

    async def run(self, openid: str, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Wait for this farmer's earlier tickets, run `fn`, let the next one go. Without a wait
        this is two Redis calls: the ticket (with the first look at whose turn it is) and done."""
        tickets, served, busy, owners = self._keys(openid)
        ticket = 0
        try:
            ticket, now_served, skipped = await self._ticket(
                keys=[served, owners, busy, tickets],
                args=[self._me, DEAD_PREFIX, KEY_TTL_S, BUSY_TTL_S],
            )
            ticket = int(ticket)
            self._skipped(served, skipped)
            if int(now_served) < ticket - 1:
                await self._wait_turn(ticket, served, busy, owners)
        except (OSError, ValueError, TimeoutError, RedisError) as exc:
            # Redis trouble must not stop the farmer's answer: run without cross-process order.
            log.warning("lane for %s without Redis order: %r", openid, exc)
            await self._abandon(owners, ticket)
            return await fn()
        except BaseException:  # cancelled while waiting: the next ticket need not wait for it
            await self._abandon(owners, ticket)
            raise
        stop = asyncio.Event()
        beat = asyncio.create_task(self._beat(busy, stop))  # `busy` was set with our turn
        try:
            return await fn()
        finally:
            # Stopped, not cancelled: a Redis command cancelled half-way spoils its connection.
            stop.set()
            with contextlib.suppress(Exception):
                await beat
            with contextlib.suppress(Exception):
                # busy deleted before the next holder sets it; served := max(served, ticket)
                await self._done(keys=[served, owners, busy], args=[ticket, KEY_TTL_S])

    def _skipped(self, served: str, skipped: Any) -> None:
        if skipped := int(skipped):
            self.skipped += skipped
            log.info("lane %s: %s ticket(s) of dead workers skipped", served, skipped)

    async def _abandon(self, owners: str, ticket: int) -> None:
        """A ticket given up before its turn: its holder is named the dead one `-`."""
        if ticket:
            with contextlib.suppress(Exception):
                await self._redis.hset(owners, str(ticket), "-")

    async def _wait_turn(self, ticket: int, served: str, busy: str, owners: str) -> None:
        t0 = time.monotonic()
        deadline = t0 + MAX_WAIT_S
        last, since, warned = -1, t0, False
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            _, now_served, skipped = await self._poll(
                keys=[served, owners, busy], args=[ticket, DEAD_PREFIX, KEY_TTL_S, BUSY_TTL_S]
            )
            now_served = int(now_served)
            self._skipped(served, skipped)
            if now_served >= ticket - 1:
                if (waited := time.monotonic() - t0) > 1.0:
                    log.info("lane %s: ticket %s waited %.2f s", served, ticket, waited)
                return
            now = time.monotonic()
            if now_served != last:
                last, since = now_served, now
            elif now - since > 10 * STALL_S and not warned:
                log.warning("lane wait: ticket %s, served %s, busy %s", ticket, now_served,
                            await self._redis.exists(busy))  # fmt: skip
                warned = True
            elif now - since > STALL_S and not await self._redis.exists(busy):
                # Nobody said its holder died, but it shows no life: the whole machine failed.
                if await self._redis.eval(_SKIP, 1, served, now_served, KEY_TTL_S):
                    self.skipped += 1
                    log.info("lane %s: silent ticket %s skipped after %.2f s", served,
                             now_served + 1, time.monotonic() - t0)  # fmt: skip
                since = now

    async def _beat(self, busy: str, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), BEAT_S)
            if stop.is_set():
                return
            with contextlib.suppress(Exception):
                await self._redis.set(busy, "1", ex=BUSY_TTL_S)
