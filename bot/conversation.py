"""Handles one inbound WeChat message: dedupe, ask Rasa within the budget, record, reply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from bot import records
from bot.rasa_client import BotTurn, RasaClient, RasaUnavailable
from bot.records import InboundRecord, ReplyRecord
from bot.wechat import Inbound
from bot.wechat_client import WeChatApi

log = logging.getLogger(__name__)
T = TypeVar("T")

WELCOME = (
    "您好！我是科特派助手，帮您解答种植、养殖中的技术问题：病害、虫害、栽培、施肥、用药、贮藏、畜禽水产。\n"
    "直接打字告诉我是什么作物、哪里不对劲，例如「猕猴桃叶子上有褐色斑点怎么办」。\n"
    "想找专家（科技特派员）本人，回复「转人工」。"
)
ACK_SLOW = "已收到您的问题，正在查询，答案稍后发给您。"
APOLOGY = "抱歉，系统暂时出了点问题。您的问题已记下，稍后给您回复；着急的话请回复「转人工」。"
NOT_UNDERSTOOD = "这个我没太明白。请说说是什么作物、出了什么问题，或回复「转人工」找专家。"
NON_TEXT_REPLIES = {
    "image": "收到您的图片。请再打字说说是什么作物、哪里不对劲（比如叶子、果子、根），我好帮您查。",
    "voice": "这条语音没听清，请打字告诉我，或换个说法再说一遍。",
    "location": "收到您的位置，谢谢。请说说遇到了什么问题。",
}
OTHER_REPLY = "收到。目前我只能看懂文字，请打字说说您的问题。"


class Conversations:
    """The gateway's message handler; one instance per process."""

    def __init__(
        self,
        *,
        rasa: RasaClient,
        sessions: sessionmaker,
        wechat: WeChatApi,
        reply_budget_s: float = 4.5,
        rasa_timeout_s: float = 60.0,
    ) -> None:
        self._rasa = rasa
        self._sessions = sessions
        self._wechat = wechat
        self._budget = reply_budget_s
        self._rasa_timeout = rasa_timeout_s
        # A WeChat retry that lands while the first try is running waits for its outcome.
        self._inflight: dict[str, asyncio.Future[str]] = {}
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
            reply = await self._handle_once(inbound, time.perf_counter())
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

    async def _handle_once(self, inbound: Inbound, started: float) -> str:
        previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
        if previous is not None:
            log.info("retry of %s answered from the record", inbound.dedupe_key)
            return previous
        received_at = records.utcnow()
        rec = InboundRecord(
            openid=inbound.openid,
            dedupe_key=inbound.dedupe_key,
            wechat_msg_id=inbound.msg_id,
            msg_type=inbound.msg_type,
            text=inbound.text,
            received_at=received_at,
        )
        if inbound.text:
            return await self._converse(inbound, rec, started)
        reply = self._canned_reply(inbound)
        rec.total_ms = _ms_since(started)
        await self._db(
            lambda s: records.record_exchange(
                s, rec, [ReplyRecord(reply, "canned")] if reply else []
            )
        )
        return reply

    @staticmethod
    def _previous_reply(session: Session, key: str) -> str | None:
        existing = records.find_inbound(session, key)
        if existing is None:
            return None
        return records.passive_reply_of(session, existing.id) or ""

    @staticmethod
    def _canned_reply(inbound: Inbound) -> str:
        if inbound.msg_type == "event:subscribe":
            return WELCOME
        if inbound.msg_type.startswith("event:"):
            return ""  # unsubscribe, menu views...: nothing to say
        return NON_TEXT_REPLIES.get(inbound.msg_type, OTHER_REPLY)

    async def _converse(self, inbound: Inbound, rec: InboundRecord, started: float) -> str:
        assert inbound.text is not None
        task = asyncio.create_task(
            self._rasa.send(inbound.openid, inbound.text, self._rasa_timeout)
        )
        remaining = max(0.0, self._budget - (time.perf_counter() - started))
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if not done:
            # Too slow for WeChat's 5 s: acknowledge now, push the answer when it comes.
            rec.status = "acknowledged"
            rec.total_ms = _ms_since(started)
            inbound_id = await self._db(
                lambda s: records.record_exchange(s, rec, [ReplyRecord(ACK_SLOW, "ack")])
            )
            bg = asyncio.create_task(self._push_when_ready(task, inbound.openid, inbound_id))
            self._background.add(bg)
            bg.add_done_callback(self._background.discard)
            return ACK_SLOW
        try:
            turn = task.result()
        except RasaUnavailable as exc:
            log.warning("rasa unavailable for %s: %s", inbound.dedupe_key, exc)
            rec.status, rec.error = "failed", str(exc)
            rec.total_ms = _ms_since(started)
            await self._db(
                lambda s: records.record_exchange(s, rec, [ReplyRecord(APOLOGY, "error")])
            )
            return APOLOGY
        reply = turn.reply or NOT_UNDERSTOOD
        _fill(rec, turn)
        rec.total_ms = _ms_since(started)
        source = turn.source if turn.reply else "fallback"
        await self._db(lambda s: records.record_exchange(s, rec, [ReplyRecord(reply, source)]))
        return reply

    async def _push_when_ready(
        self, task: asyncio.Task[BotTurn], openid: str, inbound_id: int
    ) -> None:
        turn: BotTurn | None = None
        try:
            turn = await task
            text, source = (turn.reply or NOT_UNDERSTOOD), turn.source
        except RasaUnavailable as exc:
            log.warning("late rasa failure for message %s: %s", inbound_id, exc)
            text, source = APOLOGY, "error"
        try:
            await self._wechat.send_text(openid, text)
            channel, error = "push", None
        except Exception as exc:  # recorded; the outbox with retries is the WeChat issue's
            log.exception("push to %s failed", openid)
            channel, error = "push", f"{exc.__class__.__name__}: {exc}"

        def save(session: Session) -> None:
            inbound = session.get(records.Message, inbound_id)
            if inbound is None:
                return
            if turn is not None:
                inbound.intent, inbound.confidence = turn.intent, turn.confidence
                inbound.entities, inbound.nlu_ms = turn.entities or None, turn.elapsed_ms
            out = records.add_reply(
                session, inbound, ReplyRecord(text, source, channel), records.utcnow()
            )
            out.error = error
            out.status = "failed" if error else "sent"

        await self._db(save)

    async def drain(self) -> None:
        """Wait for pushes still under way (on shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _fill(rec: InboundRecord, turn: BotTurn) -> None:
    rec.intent, rec.confidence, rec.entities = turn.intent, turn.confidence, turn.entities
    rec.nlu_ms = turn.elapsed_ms


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
