"""Service-record repository: functions that take the caller's session and never commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from bot.models import Conversation, Message

# A farmer silent for this long starts a new service record.
CONVERSATION_IDLE = timedelta(hours=6)
CONSULT_PREFIX = "ask_"


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(timezone.utc)


@dataclass
class InboundRecord:
    """What we know about one inbound message once it has been handled."""

    openid: str
    dedupe_key: str
    msg_type: str
    received_at: datetime
    wechat_msg_id: str | None = None
    text: str | None = None
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    status: str = "answered"
    nlu_ms: int | None = None
    total_ms: int | None = None
    error: str | None = None


@dataclass
class ReplyRecord:
    """One reply: passive (in the HTTP response) or pushed later."""

    text: str
    source: str
    channel: str = "passive"


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def current_conversation(session: Session, openid: str, now: datetime) -> Conversation:
    """The farmer's open service record, or a new one after CONVERSATION_IDLE of silence."""
    conv = session.execute(
        select(Conversation)
        # Not the whole history (the relationship is selectin): this runs for every message.
        .options(lazyload(Conversation.messages))
        .where(Conversation.openid == openid)
        .order_by(Conversation.last_activity_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if conv is None or now - _aware(conv.last_activity_at) > CONVERSATION_IDLE:
        conv = Conversation(openid=openid, started_at=now, last_activity_at=now)
        session.add(conv)
    return conv


def record_exchange(session: Session, inbound: InboundRecord, replies: list[ReplyRecord]) -> int:
    """Add an inbound message and its replies to the farmer's service record; return its id."""
    now = utcnow()
    conv = current_conversation(session, inbound.openid, inbound.received_at)
    conv.last_activity_at = now
    if inbound.intent and inbound.intent.startswith(CONSULT_PREFIX) and conv.category is None:
        conv.category = inbound.intent.removeprefix(CONSULT_PREFIX)
    crop = next((e.get("value") for e in inbound.entities if e.get("entity") == "crop"), None)
    if crop and conv.crop is None:
        conv.crop = str(crop)
    msg = Message(
        conversation=conv,
        openid=inbound.openid,
        direction="in",
        dedupe_key=inbound.dedupe_key,
        wechat_msg_id=inbound.wechat_msg_id,
        msg_type=inbound.msg_type,
        text=inbound.text,
        intent=inbound.intent,
        confidence=inbound.confidence,
        entities=inbound.entities or None,
        status=inbound.status,
        created_at=inbound.received_at,
        nlu_ms=inbound.nlu_ms,
        total_ms=inbound.total_ms,
        error=inbound.error,
    )
    session.add(msg)
    session.flush()
    for reply in replies:
        add_reply(session, msg, reply, now)
    return int(msg.id)


def add_reply(session: Session, inbound: Message, reply: ReplyRecord, at: datetime) -> Message:
    """Attach one reply to an inbound message's record."""
    out = Message(
        conversation_id=inbound.conversation_id,
        openid=inbound.openid,
        direction="out",
        msg_type="text",
        text=reply.text,
        source=reply.source,
        channel=reply.channel,
        reply_to_id=inbound.id,
        created_at=at,
    )
    session.add(out)
    return out


def find_inbound(session: Session, dedupe_key: str) -> Message | None:
    """The inbound message already recorded under this MsgId (or event key), if any."""
    return session.execute(
        select(Message).where(Message.dedupe_key == dedupe_key)
    ).scalar_one_or_none()


def passive_reply_of(session: Session, inbound_id: int) -> str | None:
    """The passive reply recorded for an inbound message (to answer a WeChat retry the same)."""
    return session.execute(
        select(Message.text)
        .where(Message.reply_to_id == inbound_id, Message.channel == "passive")
        .order_by(Message.id)
        .limit(1)
    ).scalar_one_or_none()


def messages_of(session: Session, openid: str) -> list[Message]:
    """Every message to and from a farmer, oldest first."""
    return list(
        session.execute(
            select(Message).where(Message.openid == openid).order_by(Message.id)
        ).scalars()
    )
