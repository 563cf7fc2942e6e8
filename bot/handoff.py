"""Cases from handoff to rating: functions that take the caller's session and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import pii, roster, routing
from bot.case_core import (
    RATING_PROMPT,
    SYSTEM,
    Actor,
    HandoffError,
    Sender,
    aware,
    can_act,
    can_view,
    case_template,
    event,
    farmer,
    get_case,
    is_held,
    move,
    note,
    offer,
    open_case_of,
    push_or_template,
    reply_template,
    require_act,
    transcript_of,
)
from bot.handoff_models import Case, Commissioner
from bot.roster import utcnow

ESCALATE_AFTER = timedelta(minutes=30)
__all__ = ["Actor", "HandoffError", "Sender", "can_act", "can_view", "open_case_of"]


def open_case(
    farmer_openid: str,
    *,
    session: Session,
    crop: str | None = None,
    category: str | None = None,
    symptoms: str | None = None,
    media: Iterable[Mapping[str, Any]] = (),
    county: str | None = None,
    township: str | None = None,
    phone: str | None = None,
    conversation_id: int | None = None,
    transcript: list[dict[str, Any]] | None = None,
    sender: Sender | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
    now: datetime | None = None,
) -> Case:
    """Open a case and offer it to the right commissioner; a farmer's open case is reused."""
    now = now or utcnow()
    existing = open_case_of(farmer_openid, session=session)
    if existing is not None:
        if symptoms:
            note(existing, "farmer", symptoms, now)
        event(session, existing, farmer(farmer_openid), "asked_again", symptoms, now=now)
        return existing
    if transcript is None and conversation_id is not None:
        transcript = transcript_of(conversation_id, session=session)
    case = Case(
        farmer_openid=farmer_openid,
        conversation_id=conversation_id,
        crop=crop,
        category=category,
        symptoms=symptoms,
        media=[dict(m) for m in media],
        county=county,
        township=township,
        phone_enc=pii.encrypt_phone(phone) if phone else None,
        transcript=list(transcript or []),
        status="waiting",
        offered_ids=[],
        escalation_level=0,
        needs_admin=False,
        created_at=now,
        updated_at=now,
    )
    session.add(case)
    session.flush()
    event(session, case, farmer(farmer_openid), "opened", symptoms, now=now)
    facts = routing.CaseFacts(crop=crop, category=category, county=county)
    decision = routing.route(facts, roster.candidates(session=session, now=now), groups=groups)
    offer(session, case, decision, now, sender, "offered")
    return case


def claim(case_id: int, actor: Actor, *, session: Session, now: datetime | None = None) -> Case:
    """A commissioner takes a waiting case they can see."""
    case = get_case(case_id, session=session)
    if actor.commissioner_id is None:
        raise HandoffError("只有绑定了科技特派员身份的账号才能接单")
    if not can_view(actor, case):
        raise HandoffError(f"#{case.id} 不在您的县，不能接单")
    now = now or utcnow()
    move(session, case, actor, "claim", None, now)
    case.commissioner = session.get(Commissioner, actor.commissioner_id)
    case.commissioner_id = actor.commissioner_id
    case.claimed_at = now
    return case


@dataclass(frozen=True)
class ReplyOutcome:
    """What became of a reply: sent now, or held until the farmer writes again."""

    case: Case
    delivery: str  # the sender's answer: "queued", "window_closed", "quota_used", "failed"
    notified: bool = False  # held, and the farmer was sent a template message about it

    @property
    def delivered(self) -> bool:
        """Whether the reply is on its way to the farmer."""
        return self.delivery == "queued"


def reply(
    case_id: int,
    actor: Actor,
    text: str,
    *,
    session: Session,
    sender: Sender,
    now: datetime | None = None,
) -> ReplyOutcome:
    """Record a commissioner's answer and push it to the farmer; held if WeChat won't take it."""
    text = text.strip()
    if not text:
        raise HandoffError("回复内容是空的")
    case = get_case(case_id, session=session)
    require_act(actor, case)
    now = now or utcnow()
    before = case.status
    move(
        session, case, actor, "reply", text, now, to="answered" if before == "assigned" else before
    )
    case.first_reply_at = case.first_reply_at or now
    delivery = sender(
        case.farmer_openid, f"【专家回复 #{case.id}】{text}", session=session, kind="commissioner"
    )
    if delivery == "queued":
        note(case, actor.label, text, now, delivery=delivery)
        return ReplyOutcome(case, delivery)
    # Kept on the case and shown to the farmer when they next write (a passive reply); they
    # are told by a template message, which WeChat sends whatever the window.
    event(session, case, SYSTEM, "reply_held", delivery, now=now)
    notified = _tell_farmer_reply_waits(session, case, sender, now)
    note(case, actor.label, text, now, delivery=delivery, notified="template" if notified else None)
    return ReplyOutcome(case, delivery, notified)


def _tell_farmer_reply_waits(session: Session, case: Case, sender: Sender, now: datetime) -> bool:
    via = getattr(sender, "template", None)
    if not callable(via):
        event(
            session, case, SYSTEM, "push_refused", "farmer: 不能发模板消息，等农户来消息", now=now
        )
        return False
    # Once per waiting spell: a second held reply needs no second template message.
    if any(e.get("notified") == "template" for e in case.transcript or [] if is_held(e)):
        return True
    via(case.farmer_openid, "reply", reply_template(case), session=session, kind="commissioner")
    event(session, case, SYSTEM, "template_sent", "farmer: 专家已回复，回复任意内容查看", now=now)
    return True


def schedule_visit(
    case_id: int, actor: Actor, when: str, *, session: Session, now: datetime | None = None
) -> Case:
    """Note an on-site visit (「明天上午」) for the case."""
    if not when.strip():
        raise HandoffError("请写上门时间，例如「访 12 明天上午」")
    case = get_case(case_id, session=session)
    require_act(actor, case)
    move(session, case, actor, "schedule_visit", when.strip(), now or utcnow())
    case.visit_when = when.strip()[:80]
    return case


def mark_visited(
    case_id: int, actor: Actor, note: str = "", *, session: Session, now: datetime | None = None
) -> Case:
    """The visit took place."""
    case = get_case(case_id, session=session)
    require_act(actor, case)
    now = now or utcnow()
    move(session, case, actor, "mark_visited", note or None, now)
    case.visited_at = now
    return case


def close(
    case_id: int,
    actor: Actor,
    resolution: str,
    *,
    session: Session,
    sender: Sender | None = None,
    now: datetime | None = None,
) -> Case:
    """Close with a resolution note, and ask the farmer for a 1–5 rating."""
    if not resolution.strip():
        raise HandoffError("结案请写处理结果，例如「结 12 已解决」")
    case = get_case(case_id, session=session)
    require_act(actor, case)
    now = now or utcnow()
    move(session, case, actor, "close", resolution.strip(), now)
    case.resolution, case.closed_at = resolution.strip(), now
    if sender is not None:
        delivery = sender(case.farmer_openid, RATING_PROMPT, session=session, kind="notice")
        if delivery != "queued":
            # Held with any held reply: the farmer reads both when they next write.
            note(case, "system", RATING_PROMPT, now, delivery=delivery)
            event(
                session,
                case,
                SYSTEM,
                "push_refused",
                f"farmer: {delivery}，评分邀请待送达",
                now=now,
            )
    return case


def reopen(
    case_id: int,
    actor: Actor,
    reason: str = "",
    *,
    session: Session,
    sender: Sender | None = None,
    now: datetime | None = None,
) -> Case:
    """Back to the commissioner who had it (or to the queue if they left the roster)."""
    case = get_case(case_id, session=session)
    if not (actor.label == farmer(case.farmer_openid).label or can_act(actor, case)):
        raise HandoffError(f"#{case.id} 不是您负责的求助单")
    now = now or utcnow()
    holder = case.commissioner
    to = "assigned" if holder is not None and holder.active else "waiting"
    move(session, case, actor, "reopen", reason or None, now, to=to)
    case.closed_at, case.rating, case.rated_at = None, None, None
    if to == "waiting":
        case.commissioner, case.commissioner_id = None, None
        facts = routing.CaseFacts(case.crop, case.category, case.county)
        decision = routing.route(facts, roster.candidates(session=session, now=now))
        offer(session, case, decision, now, sender, "offered")
    elif sender is not None and holder is not None:
        headline = f"#{case.id} 农户说问题还没解决，已重新打开"
        push_or_template(
            session, case, sender, holder.openid, f"{headline}。{reason}".strip(),
            kind="notice", template="case",
            data=case_template(case, headline, "请在网页控制台或公众号里处理。"),
            who=f"commissioner:{holder.id}", path=f"/console/cases/{case.id}", now=now,
        )  # fmt: skip
    return case


def rate(
    case_id: int, actor: Actor, rating: int, *, session: Session, now: datetime | None = None
) -> Case:
    """The farmer's 1–5 rating of a closed case (once)."""
    if not 1 <= rating <= 5:
        raise HandoffError("评分是 1～5 分")
    case = get_case(case_id, session=session)
    if case.rating is not None:
        raise HandoffError(f"#{case.id} 已经评过分了")
    now = now or utcnow()
    move(session, case, actor, "rate", str(rating), now)
    case.rating, case.rated_at = rating, now
    return case


def escalate_due(
    now: datetime,
    *,
    session: Session,
    after: timedelta = ESCALATE_AFTER,
    sender: Sender | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> list[int]:
    """Offer every case left unclaimed for `after` to the next person (finally an admin)."""
    waiting = (
        session.execute(
            select(Case)
            .where(Case.status == "waiting", Case.needs_admin.is_(False))
            .order_by(Case.id)
        )
        .scalars()
        .all()
    )
    moved: list[int] = []
    for case in waiting:
        offered_at = aware(case.offered_at) if case.offered_at else None
        if not routing.escalation_due(offered_at, now, after):
            continue
        facts = routing.CaseFacts(case.crop, case.category, case.county)
        # Loads change as cases move, so the roster is read again for each case.
        people = roster.candidates(session=session, now=now)
        decision = routing.route(facts, people, exclude=case.offered_ids or [], groups=groups)
        case.escalation_level += 1
        case.updated_at = now
        offer(session, case, decision, now, sender, "escalated")
        moved.append(case.id)
    return moved
