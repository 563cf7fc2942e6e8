"""What keeps every farmer's message when a part fails.

- Spool: when the database cannot take a message, its (plaintext) XML is written to a local
  folder (atomic rename, fsync) and the farmer is told it was received; as soon as the database
  answers again any gateway worker on the machine records it and pushes the answer.
- Recovery: a message whose answer failed (Rasa or the action server was down: the farmer got the
  apology, which promises a reply) or whose acknowledged answer was lost with a killed worker, is
  asked again once Rasa is up, and the answer is pushed through the outbox.
- A person instead: a message asked again that fails again, or still unanswered after
  KTP_HANDOVER_AFTER_S (300 s; Rasa stayed down), opens a case for the on-duty commissioner
  (routing as for 「转人工」), and the farmer is pushed 「已收到，稍后由专家回复（求助#N）」.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from bot import outbox, records
from bot.metrics import REGISTRY
from bot.models import Message
from bot.replies import ACK_SLOW, APOLOGY
from bot.wechat import BadRequest, Inbound, parse_inbound

log = logging.getLogger(__name__)
ACK_SPOOLED = "已收到您的问题，系统正在恢复，答案稍后发给您。"
# Pushed when asking again failed too: no further promise, a way to a person instead.
GIVE_UP = "抱歉，系统暂时答不上您的问题。请回复「转人工」找专家，或过一会儿再问一次。"
CLAIM_STALE_S = 60.0  # a claimed spool file older than this belonged to a dead worker
RECOVER_WINDOW = timedelta(hours=6)


class Spool:
    """Inbound messages the database could not take, one file each, until it can."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _name(self, key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]

    def put(self, inbound: Inbound, body: bytes) -> None:
        """Keep `body` (already verified and decrypted) durably; a retry overwrites itself."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{self._name(inbound.dedupe_key)}.xml"
        tmp = final.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        REGISTRY.inc("ktp_spooled_total")

    def take(self, limit: int = 50) -> list[Path]:
        """Claim up to `limit` files for this process (rename is atomic across processes)."""
        if not self.folder.is_dir():
            return []
        claimed: list[Path] = []
        now = _now_s()
        for path in sorted(self.folder.iterdir())[: limit * 2]:
            stale = ".claimed" in path.name and now - _mtime(path) > CLAIM_STALE_S
            if not (path.suffix == ".xml" and ".claimed" not in path.name) and not stale:
                continue
            target = self.folder / f"{path.name.split('.')[0]}.claimed{os.getpid()}.xml"
            try:
                os.replace(path, target)
                os.utime(target)
            except FileNotFoundError:
                continue  # another worker took it
            claimed.append(target)
            if len(claimed) >= limit:
                break
        return claimed

    def give_back(self, path: Path) -> None:
        """The database is still down: leave it for the next pass."""
        os.replace(path, self.folder / f"{path.name.split('.')[0]}.xml")


def _now_s() -> float:
    import time

    return time.time()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return _now_s()


async def replay(spool: Spool, accept: Callable[[Inbound, str], Awaitable[None]]) -> int:
    """Record spooled messages (their answers follow by push); return how many."""
    done = 0
    for path in spool.take():
        try:
            inbound = parse_inbound(path.read_bytes())
        except (BadRequest, OSError):
            log.error("unreadable spool file %s left aside", path)
            os.replace(path, path.with_suffix(".bad"))
            continue
        try:
            await accept(inbound, ACK_SPOOLED)
        except Exception as exc:
            log.warning("spooled %s not recorded yet: %s", inbound.dedupe_key, exc)
            spool.give_back(path)
            break
        path.unlink(missing_ok=True)
        done += 1
    return done


def claim_unanswered(
    sessions: sessionmaker, failed_after: timedelta, acked_after: timedelta
) -> list[tuple[int, str, str]]:
    """Text messages that failed, or were acknowledged and never answered by push (their
    worker died), marked `retried` so that one process asks again."""
    now = records.utcnow()
    pushed = _pushed()
    with sessions() as session, session.begin():
        rows = session.execute(
            select(Message.id, Message.openid, Message.text)
            .where(
                Message.direction == "in",
                Message.msg_type == "text",
                Message.created_at > now - RECOVER_WINDOW,
                ((Message.status == "failed") & (Message.created_at < now - failed_after))
                | (
                    (Message.status == "acknowledged")
                    & (Message.created_at < now - acked_after)
                    & ~pushed
                ),
            )
            .order_by(Message.id)
            .limit(50)
        ).all()
        claimed = []
        for msg_id, openid, text in rows:
            result = session.execute(
                update(Message)
                .where(Message.id == msg_id, Message.status.in_(("failed", "acknowledged")))
                .values(status="retried")
            )
            if result.rowcount == 1 and text:
                claimed.append((int(msg_id), str(openid), str(text)))
    return claimed


def hand_to_person(session: Session, inbound: Message) -> tuple[str, str]:
    """Open (or reuse) a case for a message the bot could not answer; the farmer's push text
    and its source. On any trouble opening the case, the older 「请回复转人工」 text."""
    from bot import handoff
    from bot.handoff_push import outbox_sender
    from bot.replies import HANDED_OVER

    try:
        with session.begin_nested():
            case = handoff.open_case(
                inbound.openid,
                session=session,
                symptoms=inbound.text,
                conversation_id=inbound.conversation_id,
                sender=outbox_sender,
            )
    except Exception:  # the farmer must still hear from us
        log.exception("could not open a case for message %s", inbound.id)
        return GIVE_UP, "error"
    return HANDED_OVER.format(case=case.id), f"error:case#{case.id}"


def hand_over_unanswered(sessions: sessionmaker, older_than: timedelta) -> list[int]:
    """Messages failed or acknowledged-and-never-pushed for longer than `older_than` (Rasa
    stayed down): each gets a case and the farmer a push saying a person will answer. Each
    message in its own transaction, claimed by status so that one worker does it."""
    now = records.utcnow()
    pushed = _pushed()
    with sessions() as session:
        ids = (
            session.execute(
                select(Message.id)
                .where(
                    Message.direction == "in",
                    Message.msg_type == "text",
                    Message.status.in_(("failed", "acknowledged", "retried")),
                    Message.created_at > now - RECOVER_WINDOW,
                    Message.created_at < now - older_than,
                    ~pushed,
                )
                .order_by(Message.id)
                .limit(50)
            )
            .scalars()
            .all()
        )
    done = []
    for msg_id in ids:
        with sessions() as session, session.begin():
            claimed = session.execute(
                update(Message)
                .where(
                    Message.id == msg_id,
                    Message.status.in_(("failed", "acknowledged", "retried")),
                )
                .values(status="handed_over")
            )
            msg = session.get(Message, msg_id)
            if claimed.rowcount != 1 or msg is None:
                continue
            text, source = hand_to_person(session, msg)
            outbox.enqueue(session, reply_to=msg, content=text, source=source)
            done.append(int(msg_id))
    return done


def _pushed() -> Any:
    """EXISTS: the inbound message in the outer query has a pushed reply."""
    reply = aliased(Message)
    return exists().where(and_(reply.reply_to_id == Message.id, reply.channel == "push"))


def resend_passive(session: Session, key: str) -> None:
    """Queue the recorded passive reply of `key` as a push, unless one was pushed already."""
    msg = records.find_inbound(session, key)
    text = records.passive_reply_of(session, msg.id) if msg is not None else None
    if msg is None or not text or text in {ACK_SLOW, APOLOGY, ACK_SPOOLED}:
        return  # an acknowledgement: its own answer follows (or recovery asks again)
    pushed = session.execute(
        select(Message.id).where(Message.reply_to_id == msg.id, Message.channel == "push")
    ).first()
    if pushed is None:
        outbox.enqueue(session, reply_to=msg, content=text, source="resend")
