"""Service records for the admin tests: a month of consultations and cases with known figures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from bot import handoff
from bot.handoff import Actor
from bot.handoff_models import Commissioner
from bot.models import Conversation, Message
from tests.handoff_helpers import RecordingSender, seed_roster

# 2026-11-03 10:00 Beijing time
T0 = datetime(2026, 11, 3, 2, 0, tzinfo=timezone.utc)


def conversation(
    session: Session, openid: str, at: datetime, category: str | None, crop: str | None
) -> Conversation:
    """A conversation with one inbound message."""
    conv = Conversation(
        openid=openid, started_at=at, last_activity_at=at, category=category, crop=crop
    )
    session.add(conv)
    session.flush()
    session.add(
        Message(
            conversation_id=conv.id,
            openid=openid,
            direction="in",
            msg_type="text",
            text=f"{crop or ''}怎么办",
            intent=f"ask_{category}" if category else "greet",
            confidence=0.4,
            created_at=at,
        )
    )
    return conv


def actor(session: Session, openid: str) -> Actor:
    """The commissioner with this openid as an actor."""
    c = session.query(Commissioner).filter_by(openid=openid).one()
    return Actor.of_commissioner(c)


def seed_month(session: Session) -> dict[str, int]:
    """Seed November 2026 (and noise outside it); returns the case ids by name."""
    seed_roster(session)
    send = RecordingSender()
    wang, zhao = actor(session, "c-kiwi"), actor(session, "c-mei")
    m = timedelta(minutes=1)
    # Bot-answered consultations: two in November, one greeting only (not a consultation),
    # one in October and one on 2026-12-01 00:30 Beijing time (still 11-30 in UTC).
    conversation(session, "f1", T0, "disease", "猕猴桃")
    conversation(session, "f2", T0 + timedelta(days=1), "pest", "白菜")
    conversation(session, "f3", T0, None, None)
    conversation(session, "f4", T0 - timedelta(days=10), "disease", "猕猴桃")
    conversation(session, "f5", datetime(2026, 11, 30, 16, 30, tzinfo=timezone.utc), "pest", None)
    ids: dict[str, int] = {}

    def case(name: str, openid: str, county: str | None, at: datetime) -> int:
        conv = conversation(session, openid, at, "disease", "猕猴桃")
        c = handoff.open_case(
            openid,
            session=session,
            crop="猕猴桃",
            category="disease",
            county=county,
            conversation_id=conv.id,
            sender=send,
            now=at,
        )
        ids[name] = c.id
        return c.id

    # A: 王猕, reply after 10 min, visit, close after 120 min, rated 5.
    a = case("a", "fa", "周至县", T0)
    handoff.claim(a, wang, session=session, now=T0 + 5 * m)
    handoff.reply(a, wang, "先摘病叶", session=session, sender=send, now=T0 + 10 * m)
    handoff.schedule_visit(a, wang, "明天上午", session=session, now=T0 + 11 * m)
    handoff.mark_visited(a, wang, session=session, now=T0 + 60 * m)
    handoff.close(a, wang, "已解决", session=session, now=T0 + 120 * m)
    handoff.rate(a, handoff.farmer("fa"), 5, session=session, now=T0 + 130 * m)
    # B: 王猕, reply after 30 min, close after 60 min, rated 3.
    b = case("b", "fb", "周至县", T0 + timedelta(days=2))
    tb = T0 + timedelta(days=2)
    handoff.claim(b, wang, session=session, now=tb + 1 * m)
    handoff.reply(b, wang, "喷药", session=session, sender=send, now=tb + 30 * m)
    handoff.close(b, wang, "已解决", session=session, now=tb + 60 * m)
    handoff.rate(b, handoff.farmer("fb"), 3, session=session, now=tb + 61 * m)
    # C: 赵眉 in 眉县, claimed, never answered.
    c = case("c", "fc", "眉县", T0 + timedelta(days=3))
    handoff.claim(c, zhao, session=session, now=T0 + timedelta(days=3, minutes=2))
    # D: no county, nobody claimed it; escalated to the admins.
    d = case("d", "fd", None, T0 + timedelta(days=4))
    handoff.get_case(d, session=session).needs_admin = True
    # E: October, must not count.
    case("e", "fe", "周至县", T0 - timedelta(days=20))
    session.commit()
    return ids
