"""Handles one inbound WeChat message: dedupe, ask Rasa within the budget, record, reply.

Before Rasa, the handoff (issue 6): a bound commissioner's message is a command
(`handle_commissioner_text`), and a farmer's message during an open case goes to the
commissioner (`route_farmer_message`, which also takes the 1–5 rating after closing). While a
case is open Rasa's conversation is paused (ConversationPaused); after it closes it is resumed.
Each is recorded with the message in one transaction.

A photo or a WeChat location sent while the consultation form asks for one goes to Rasa as
`/inform{"photo": "<MediaId>"}` or `/inform{"location": "位置：<county/township>"}` (coarsened,
without coordinates), so that the form's slot is filled through Rasa and the form moves on; the
photo is still downloaded and attached to the case. Only then is Rasa's tracker read (one
request per photo or location, never for a text message); otherwise the fixed reply answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot import handoff_commands, media, outbox, records, replies
from bot.case_core import SYSTEM, Sender, event, open_case_of
from bot.dedupe import RedisClaims
from bot.handoff_models import Case, CaseEvent
from bot.lanes import RedisLanes
from bot.metrics import REGISTRY
from bot.models import Message
from bot.outbox import OutboxSender
from bot.rasa_client import BotTurn, RasaClient, RasaUnavailable
from bot.ratelimit import RateLimiter, RedisRateLimiter
from bot.records import InboundRecord, ReplyRecord
from bot.replies import ACK_SLOW, APOLOGY, NOT_UNDERSTOOD, RATE_LIMITED
from bot.resilience import hand_to_person, resend_passive
from bot.wechat import Inbound

log = logging.getLogger(__name__)
T = TypeVar("T")
KEEP_MEDIA = {"image", "voice"}  # video is acknowledged only (media/get gives a URL for it)
FORM = "consultation_form"
# Message type → the form slot it can answer.
FORM_SLOTS = {"image": "photo", "location": "location"}
# Case events that say what Rasa was last told (so that it is told once, and again after a
# restart if it was not).
PAUSED, RESUMED = "bot_paused", "bot_resumed"


def _bot_state(session: Session, case_id: int) -> str | None:
    return session.execute(
        select(CaseEvent.action)
        .where(CaseEvent.case_id == case_id, CaseEvent.action.in_((PAUSED, RESUMED)))
        .order_by(CaseEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _to_resume(session: Session, openid: str) -> int | None:
    """The farmer's newest case when it is closed and Rasa was paused for it (and not resumed)."""
    case = session.execute(
        select(Case).where(Case.farmer_openid == openid).order_by(Case.id.desc()).limit(1)
    ).scalar_one_or_none()
    if case is None or case.status != "closed":
        return None
    return int(case.id) if _bot_state(session, case.id) == PAUSED else None


@dataclass(frozen=True)
class _Handoff:
    """What the handoff made of a message: the passive reply and what Rasa must be told."""

    handled: bool  # False: the message is for the bot (Rasa)
    reply: str = ""
    pause_case: int | None = None
    resume_case: int | None = None
    previous: bool = False  # a retry: `reply` is the recorded passive reply


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
        limiter: RateLimiter | RedisRateLimiter | None = None,
        lanes: RedisLanes | None = None,
        reply_budget_s: float = 4.5,
        rasa_timeout_s: float = 60.0,
        extra_delay_s: Callable[[], float] | None = None,
        handoff_sender: Sender | None = None,
    ) -> None:
        self._rasa = rasa
        self._sessions = sessions
        self._sender = sender
        self._fetcher = fetcher
        self._claims = claims
        self._limiter = limiter or RateLimiter()
        self._xlanes = lanes  # arrival order across gateway processes (Redis)
        self._budget = reply_budget_s
        self._rasa_timeout = rasa_timeout_s
        self._extra_delay = extra_delay_s  # the simulator's "slow bot" switch
        if handoff_sender is None:
            from bot.handoff_push import outbox_sender

            handoff_sender = outbox_sender
        self._handoff_sender: Sender = handoff_sender
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
            REGISTRY.inc("ktp_dedupe_hits_total", where="inflight")
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
        if self._claims is not None:
            spent = await self._claims.acquire(key)
            if spent is None:
                answered = await self._await_other_process(key, started)
                if isinstance(answered, str):
                    return answered
                spent = answered
            # Taken over from a worker that died with the first try: the farmer has waited since
            # that try began, so the reply budget counts from then.
            started = min(started, time.perf_counter() - min(spent, self._budget))
        try:
            return await self._handle_once(inbound, started)
        except Exception as exc:
            if self._claims is not None:
                await self._claims.release(key)
            return await self._internal_error(inbound, started, exc)

    async def _await_other_process(self, key: str, started: float) -> str | float:
        """Another process has this MsgId: answer with its passive reply once recorded; when
        that process died and this one took the claim over, the seconds its try had run."""
        REGISTRY.inc("ktp_dedupe_hits_total", where="other_process")
        while time.perf_counter() - started < self._budget:
            previous = await self._db(lambda s: self._previous_reply(s, key))
            if previous is not None:
                return previous
            if self._claims is not None and (spent := await self._claims.acquire(key)) is not None:
                return spent
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

    async def _from_record(self, inbound: Inbound) -> str | None:
        """The recorded passive reply when `inbound` is a retry of a recorded message."""
        previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
        if previous is not None:
            self._retried(inbound)
        return previous

    @staticmethod
    def _retried(inbound: Inbound) -> None:
        log.info("retry of %s answered from the record", inbound.dedupe_key)
        REGISTRY.inc("ktp_dedupe_hits_total", where="record")

    async def _handle_once(self, inbound: Inbound, started: float) -> str:
        rec = self._inbound_record(inbound)
        if not await self._limiter.allow_async(inbound.openid):
            previous = await self._from_record(inbound)
            if previous is not None:
                return previous
            rec.status = "rate_limited"
            return await self._canned(inbound, rec, started, RATE_LIMITED, "ratelimit")
        if (
            inbound.text
            or (inbound.media_id and inbound.msg_type in KEEP_MEDIA)
            or inbound.msg_type == "location"  # during a case: for the commissioner (coarse)
        ):
            # One transaction looks for the record of a retry and for an open case (measured:
            # each transaction is a thread hop and ~1-1.5 ms of the gateway's overhead).
            handled = await self._handoff(inbound, rec, started)
            if handled is not None:
                return handled
        else:
            previous = await self._from_record(inbound)
            if previous is not None:
                return previous
        if inbound.text:
            return await self._converse(inbound, rec, started)
        answer = await self._form_answer(inbound)
        if answer is not None:
            return await self._converse(inbound, rec, started, text=answer)
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

    async def _handoff(self, inbound: Inbound, rec: InboundRecord, started: float) -> str | None:
        """A commissioner's command or a farmer's message during a case, recorded with its reply
        in one transaction; None when the message is for the bot (Rasa)."""
        text = inbound.text
        items = []
        if inbound.media_id and inbound.msg_type in KEEP_MEDIA:
            items = [{"kind": inbound.msg_type, "media_id": inbound.media_id}]

        def work(session: Session) -> _Handoff:
            previous = self._previous_reply(session, inbound.dedupe_key)
            if previous is not None:
                return _Handoff(True, previous, previous=True)
            sender = self._handoff_sender
            reply: str | None = None
            pause_case = resume_case = None
            if text:
                reply = handoff_commands.handle_commissioner_text(
                    inbound.openid, text, session=session, sender=sender
                )
                source = "handoff:commissioner"
            if reply is None:
                shown = text or (inbound.note if inbound.msg_type == "location" else None)
                result = handoff_commands.route_farmer_message(
                    inbound.openid, shown, items, session=session, sender=sender
                )
                if result is None:  # nothing written: the bot answers
                    return _Handoff(False, resume_case=_to_resume(session, inbound.openid))
                reply, source = result.reply or "", f"handoff:{result.action}"
                state = _bot_state(session, result.case_id)
                if result.paused and state != PAUSED:
                    pause_case = result.case_id
                elif not result.paused and state == PAUSED:
                    resume_case = result.case_id
            rec.status, rec.total_ms = "handoff", _ms_since(started)
            msg_id = records.record_exchange(session, rec, [ReplyRecord(reply, source)])
            if items:
                msg = session.get(Message, msg_id)
                assert msg is not None
                media.register(session, msg, inbound.msg_type, items[0]["media_id"])
            return _Handoff(True, reply, pause_case, resume_case)

        try:
            outcome = await self._db(work)
        except IntegrityError:
            log.info("%s was recorded by another process", inbound.dedupe_key)
            previous = await self._db(lambda s: self._previous_reply(s, inbound.dedupe_key))
            return previous or ""
        if outcome.previous:
            self._retried(inbound)
            return outcome.reply
        if not outcome.handled:
            if outcome.resume_case is not None:
                # The farmer is back with the bot: Rasa must listen again before it hears them.
                await self._tell_rasa(inbound.openid, outcome.resume_case, RESUMED)
            return None
        if self._sender is not None:
            self._sender.wake()
        if items and self._fetcher is not None:
            self._fetcher.wake()
        if outcome.pause_case is not None:
            self._spawn(self._tell_rasa(inbound.openid, outcome.pause_case, PAUSED))
        if outcome.resume_case is not None:
            self._spawn(self._tell_rasa(inbound.openid, outcome.resume_case, RESUMED))
        return outcome.reply

    async def _tell_rasa(self, openid: str, case_id: int, what: str) -> None:
        """Pause or resume the farmer's Rasa conversation, and note it on the case."""
        rasa_event = {"event": "pause" if what == PAUSED else "resume"}
        if not await self._in_lane(openid, lambda: self._rasa.add_event(openid, rasa_event)):
            log.warning("rasa did not take %s for %s (case #%s)", rasa_event, openid, case_id)
            return

        def note(session: Session) -> None:
            event(session, session.get(Case, case_id), SYSTEM, what, now=records.utcnow())

        try:
            await self._db(note)
        except Exception:
            log.exception("could not note %s on case #%s", what, case_id)

    async def _pause_for_new_case(self, openid: str) -> None:
        """After the consultation form opened a case: the bot steps aside until it closes."""

        def find(session: Session) -> int | None:
            case = open_case_of(openid, session=session)
            if case is None or _bot_state(session, case.id) is not None:
                return None
            return int(case.id)

        try:
            case_id = await self._db(find)
        except Exception:
            log.exception("could not look up the new case of %s", openid)
            return
        if case_id is not None:
            await self._tell_rasa(openid, case_id, PAUSED)

    @staticmethod
    def _previous_reply(session: Session, key: str) -> str | None:
        existing = records.find_inbound(session, key)
        if existing is None:
            return None
        return records.passive_reply_of(session, existing.id) or ""

    async def _turn(self, openid: str, text: str) -> BotTurn:
        """Ask Rasa, after this farmer's earlier turns (arrival order)."""

        async def ask() -> BotTurn:
            if self._extra_delay is not None and (delay := self._extra_delay()) > 0:
                await asyncio.sleep(delay)
            turn = await self._rasa.send(openid, text, self._rasa_timeout)
            if turn.source == "bot:handoff":
                self._spawn(self._pause_for_new_case(openid))
            return turn

        return await self._in_lane(openid, ask)

    async def _in_lane(self, openid: str, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `fn` after this farmer's earlier calls to Rasa (arrival order)."""
        lock, users = self._lanes.get(openid, (asyncio.Lock(), 0))
        self._lanes[openid] = (lock, users + 1)
        try:
            async with lock:
                if self._xlanes is not None:
                    return await self._xlanes.run(openid, fn)
                return await fn()
        finally:
            lock, users = self._lanes[openid]
            if users <= 1:
                del self._lanes[openid]
            else:
                self._lanes[openid] = (lock, users - 1)

    async def _form_answer(self, inbound: Inbound) -> str | None:
        """What to tell Rasa when a photo or location answers the form's question now, else
        None (the fixed reply answers)."""
        slot = FORM_SLOTS.get(inbound.msg_type)
        if slot == "photo":
            value = inbound.media_id
        elif slot == "location":
            # As the form reads a shared location: 「位置：<county/township>」, no coordinates.
            place = place_of(inbound.note)
            value = f"位置：{place}" if place else None
        else:
            return None
        if not value:
            return None
        try:
            loop, requested = await self._in_lane(
                inbound.openid, lambda: self._rasa.form_state(inbound.openid)
            )
        except Exception as exc:  # Rasa down or Redis trouble: the fixed reply still answers
            log.warning("could not read the form state of %s: %r", inbound.openid, exc)
            return None
        if loop != FORM or requested != slot:
            return None
        return "/inform" + json.dumps({slot: value}, ensure_ascii=False)

    async def _converse(
        self, inbound: Inbound, rec: InboundRecord, started: float, text: str | None = None
    ) -> str:
        text = text or farmer_text(inbound.text)
        assert text is not None
        task = asyncio.create_task(self._turn(inbound.openid, text))
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
        failure = ""
        try:
            turn = await task
        except Exception as exc:  # RasaUnavailable, or Redis trouble in the lane
            log.warning("late failure for message %s: %r", inbound_id, exc)
            failure = repr(exc)[:500]

        def save(session: Session) -> None:
            inbound = session.get(Message, inbound_id)
            assert inbound is not None
            if turn is not None:
                inbound.intent, inbound.confidence = turn.intent, turn.confidence
                inbound.entities, inbound.nlu_ms = turn.entities or None, turn.elapsed_ms
                text, source = (turn.reply or NOT_UNDERSTOOD), turn.source
            else:
                inbound.error = f"rasa failed after the acknowledgement: {failure}"
                if inbound.status != "retried":
                    # The farmer was promised an answer: asked again once Rasa is back.
                    inbound.status = "failed"
                    return
                # Asked again and failed again: a person takes the question, and the farmer is
                # told so. A case already open for this farmer is reused (open_case).
                text, source = hand_to_person(session, inbound)
            outbox.enqueue(session, reply_to=inbound, content=text, source=source)

        try:
            await self._db(save)
        except Exception:
            log.exception("could not queue the answer to message %s", inbound_id)
            return
        if self._sender is not None:
            self._sender.wake()

    async def accept_late(self, inbound: Inbound, ack: str) -> None:
        """A message spooled while the database was down (`ack` was the passive reply): record
        it now and push the answer when Rasa gives it."""
        rec = self._inbound_record(inbound)
        rec.status = "acknowledged"
        inbound_id, lost = await self._record(inbound, rec, [ReplyRecord(ack, "ack")])
        if lost is None and inbound.text:
            self.ask_again(inbound_id, inbound.openid, inbound.text)
        elif lost:
            # An earlier try was recorded with its answer, but the farmer saw only `ack` (that
            # try timed out on WeChat's side): push the answer.
            await self._db(lambda s: resend_passive(s, inbound.dedupe_key))
            if self._sender is not None:
                self._sender.wake()

    def ask_again(self, inbound_id: int, openid: str, text: str) -> None:
        """Ask Rasa for a recorded message's answer and queue it as a push (recovery)."""
        task = asyncio.create_task(self._turn(openid, farmer_text(text) or text))
        self._spawn(self._push_when_ready(task, inbound_id))

    async def drain(self) -> None:
        """Wait for answers still under way (on shutdown) so that they reach the outbox."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def farmer_text(text: str | None) -> str | None:
    """What a farmer typed, made safe for Rasa: a leading "/" would be read as an intent
    command (`/request_human`, `/inform{...}`), which only the gateway may send. Rasa strips
    the text first, so the slash becomes a full-width 「／」; the words are unchanged."""
    if text is None:
        return None
    stripped = text.lstrip()
    if stripped.startswith("/"):
        return "／" + stripped[1:]
    return text


def place_of(note: str | None) -> str | None:
    """The county/township of a coarsened WeChat location note (「位置：周至县楼观镇（约 …）」),
    without the coordinates; None when WeChat gave no place name."""
    if not note or not note.startswith("位置："):
        return None
    place = note.removeprefix("位置：").split("（", 1)[0].strip()
    return place or None


def _fill(rec: InboundRecord, turn: BotTurn) -> None:
    rec.intent, rec.confidence, rec.entities = turn.intent, turn.confidence, turn.entities
    rec.nlu_ms = turn.elapsed_ms


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
