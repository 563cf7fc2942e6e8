"""Handles one inbound WeChat message: dedupe, ask Rasa within the budget, record, reply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot import media, outbox, records, replies
from bot.dedupe import RedisClaims
from bot.models import Message
from bot.outbox import OutboxSender
from bot.rasa_client import BotTurn, RasaClient, RasaUnavailable
from bot.ratelimit import RateLimiter
from bot.records import InboundRecord, ReplyRecord
from bot.replies import ACK_SLOW, APOLOGY, NOT_UNDERSTOOD, RATE_LIMITED
from bot.wechat import Inbound

log = logging.getLogger(__name__)
T = TypeVar("T")
KEEP_MEDIA = {"image", "voice"}  # video is acknowledged only (media/get gives a URL for it)


class Conversations:
    """The gateway's message handler; one instance per process."""

    def __init__(
        self,
        *,
        rasa: RasaClient,
        sessions: sessionmaker,
        sender: OutboxSender | None = None,
        fetcher: media.MediaFetcher | None = None,
        claims: RedisClaims | None = None,
        limiter: RateLimiter | None = None,
        reply_budget_s: float = 4.5,
        rasa_timeout_s: float = 60.0,
        extra_delay_s: Callable[[], float] | None = None,
    ) -> None:
        self._rasa = rasa
        self._sessions = sessions
        self._sender = sender
        self._fetcher = fetcher
        self._claims = claims
        self._limiter = limiter or RateLimiter()
        self._budget = reply_budget_s
        self._rasa_timeout = rasa_timeout_s
        self._extra_delay = extra_delay_s  # the simulator's "slow bot" switch
        # A WeChat retry that lands while the first try is running waits for its outcome.
        self._inflight: dict[str, asyncio.Future[str]] = {}
        # One farmer's turns reach Rasa in arrival order; different farmers' in parallel.
        self._lanes: dict[str, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, inbound: Inbound) -> str:
        """Return the passive reply text for `inbound` ("" means reply `success`)."""
        key = inbound.dedupe_key
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            reply = await self._handle_claimed(inbound, time.perf_counter())
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a retry may not be waiting
            raise
        else:
            future.set_result(reply)
            return reply
        finally:
            del self._inflight[key]

    async def _db(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction, in a thread (the driver blocks)."""

        def work() -> T:
            with self._sessions() as session, session.begin():
                return fn(session)

        return await asyncio.to_thread(work)

    async def _handle_claimed(self, inbound: Inbound, started: float) -> str:
        key = inbound.dedupe_key
        if self._claims is not None and not await self._claims.claim(key):
            return await self._await_other_process(key, started)
        try:
            return await self._handle_once(inbound, started)
        except Exception as exc:
            if self._claims is not None:
                await self._claims.release(key)
            return await self._internal_error(inbound, started, exc)

    async def _await_other_process(self, key: str, started: float) -> str:
        """Another process has this MsgId: answer with its passive reply once recorded."""
        while time.perf_counter() - started < self._budget:
            previous = await self._db(lambda s: self._previous_reply(s, key))
            if previous is not None:
                return previous
            await asyncio.sleep(0.1)
        return ""  # "success": the other process answers or pushes

    async def _internal_error(self, inbound: Inbound, started: float, exc: Exception) -> str:
        """Record the failure and apologise; if even that fails, let WeChat retry (503)."""
        log.exception("failed to handle %s", inbound.dedupe_key)
        rec = self._inbound_record(inbound)
        rec.status, rec.error = "failed", f"{exc.__class__.__name__}: {exc}"[:2000]
        rec.total_ms = _ms_since(started)
        try:
            await self._db(
                lambda s: records.record_exchange(s, rec, [ReplyRecord(APOLOGY, "error")])
            )
        except IntegrityError:
            previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
            return previous if previous is not None else APOLOGY
        return APOLOGY

    async def _record(
        self, inbound: Inbound, rec: InboundRecord, replies_: list[ReplyRecord]
    ) -> tuple[int, str | None]:
        """Record the exchange; on a lost insert race, return the winner's passive reply."""

        def work(session: Session) -> int:
            msg_id = records.record_exchange(session, rec, replies_)
            if inbound.media_id and inbound.msg_type in KEEP_MEDIA:
                msg = session.get(Message, msg_id)
                assert msg is not None
                media.register(session, msg, inbound.msg_type, inbound.media_id)
            return msg_id

        try:
            msg_id = await self._db(work)
        except IntegrityError:
            log.info("%s was recorded by another process", inbound.dedupe_key)
            previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
            return -1, previous or ""
        if inbound.media_id and inbound.msg_type in KEEP_MEDIA and self._fetcher is not None:
            self._fetcher.wake()
        return msg_id, None

    @staticmethod
    def _inbound_record(inbound: Inbound) -> InboundRecord:
        return InboundRecord(
            openid=inbound.openid,
            dedupe_key=inbound.dedupe_key,
            wechat_msg_id=inbound.msg_id,
            msg_type=inbound.msg_type,
            text=inbound.text or inbound.note,
            received_at=records.utcnow(),
        )

    async def _handle_once(self, inbound: Inbound, started: float) -> str:
        previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
        if previous is not None:
            log.info("retry of %s answered from the record", inbound.dedupe_key)
            return previous
        rec = self._inbound_record(inbound)
        if not self._limiter.allow(inbound.openid):
            rec.status = "rate_limited"
            return await self._canned(inbound, rec, started, RATE_LIMITED, "ratelimit")
        if inbound.text:
            return await self._converse(inbound, rec, started)
        reply = replies.canned_reply(inbound)
        if reply is None:  # 「我的求助」
            reply = await self._db(lambda s: replies.my_cases(s, inbound.openid))
        return await self._canned(inbound, rec, started, reply, "canned")

    async def _canned(
        self, inbound: Inbound, rec: InboundRecord, started: float, reply: str, source: str
    ) -> str:
        rec.total_ms = _ms_since(started)
        _, lost = await self._record(inbound, rec, [ReplyRecord(reply, source)] if reply else [])
        return reply if lost is None else lost

    @staticmethod
    def _previous_reply(session: Session, key: str) -> str | None:
        existing = records.find_inbound(session, key)
        if existing is None:
            return None
        return records.passive_reply_of(session, existing.id) or ""

    async def _turn(self, openid: str, text: str) -> BotTurn:
        """Ask Rasa, after this farmer's earlier turns (arrival order)."""
        lock, users = self._lanes.get(openid, (asyncio.Lock(), 0))
        self._lanes[openid] = (lock, users + 1)
        try:
            async with lock:
                if self._extra_delay is not None and (delay := self._extra_delay()) > 0:
                    await asyncio.sleep(delay)
                return await self._rasa.send(openid, text, self._rasa_timeout)
        finally:
            lock, users = self._lanes[openid]
            if users <= 1:
                del self._lanes[openid]
            else:
                self._lanes[openid] = (lock, users - 1)

    async def _converse(self, inbound: Inbound, rec: InboundRecord, started: float) -> str:
        assert inbound.text is not None
        task = asyncio.create_task(self._turn(inbound.openid, inbound.text))
        remaining = max(0.0, self._budget - (time.perf_counter() - started))
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if not done:
            # Too slow for WeChat's 5 s: acknowledge now, push the answer when it comes.
            rec.status = "acknowledged"
            rec.total_ms = _ms_since(started)
            inbound_id, lost = await self._record(inbound, rec, [ReplyRecord(ACK_SLOW, "ack")])
            if lost is not None:
                task.cancel()
                return lost
            self._spawn(self._push_when_ready(task, inbound_id))
            return ACK_SLOW
        try:
            turn = task.result()
        except RasaUnavailable as exc:
            log.warning("rasa unavailable for %s: %s", inbound.dedupe_key, exc)
            rec.status, rec.error = "failed", str(exc)
            return await self._canned(inbound, rec, started, APOLOGY, "error")
        reply = turn.reply or NOT_UNDERSTOOD
        _fill(rec, turn)
        source = turn.source if turn.reply else "fallback"
        return await self._canned(inbound, rec, started, reply, source)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        bg: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    async def _push_when_ready(self, task: asyncio.Task[BotTurn], inbound_id: int) -> None:
        """Queue the late answer on the durable outbox, in one transaction with its record."""
        turn: BotTurn | None = None
        try:
            turn = await task
            text, source = (turn.reply or NOT_UNDERSTOOD), turn.source
        except RasaUnavailable as exc:
            log.warning("late rasa failure for message %s: %s", inbound_id, exc)
            text, source = APOLOGY, "error"

        def save(session: Session) -> None:
            inbound = session.get(Message, inbound_id)
            assert inbound is not None
            if turn is not None:
                inbound.intent, inbound.confidence = turn.intent, turn.confidence
                inbound.entities, inbound.nlu_ms = turn.entities or None, turn.elapsed_ms
            else:
                inbound.error = "rasa failed after the acknowledgement"
            outbox.enqueue(session, reply_to=inbound, content=text, source=source)

        try:
            await self._db(save)
        except Exception:
            log.exception("could not queue the answer to message %s", inbound_id)
            return
        if self._sender is not None:
            self._sender.wake()

    async def drain(self) -> None:
        """Wait for answers still under way (on shutdown) so that they reach the outbox."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _fill(rec: InboundRecord, turn: BotTurn) -> None:
    rec.intent, rec.confidence, rec.entities = turn.intent, turn.confidence, turn.entities
    rec.nlu_ms = turn.elapsed_ms


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
