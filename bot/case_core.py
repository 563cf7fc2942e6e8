"""The parts every case action shares: states, actors and permissions, events, routing offers.

Every transition is checked against TRANSITIONS (an illegal one raises HandoffError with a
message fit for the person who tried it) and written as an attributed CaseEvent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import routing
from bot.handoff_models import OPEN_STATUSES, Account, Case, CaseEvent, Commissioner
from bot.models import Message
from bot.roster import utcnow

STATUS_LABELS = {
    "waiting": "待接单",
    "assigned": "已接单",
    "answered": "已回复",
    "visit_scheduled": "待上门",
    "visited": "已上门",
    "closed": "已结案",
}
# action → (statuses it may start from, status it leads to; None keeps the status)
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "claim": (frozenset({"waiting"}), "assigned"),
    "reply": (frozenset({"assigned", "answered", "visit_scheduled", "visited"}), None),
    "schedule_visit": (frozenset({"assigned", "answered"}), "visit_scheduled"),
    "mark_visited": (frozenset({"visit_scheduled"}), "visited"),
    "close": (frozenset({"assigned", "answered", "visit_scheduled", "visited"}), "closed"),
    "reopen": (frozenset({"closed"}), None),
    "rate": (frozenset({"closed"}), None),
}
RATING_PROMPT = "专家已结束本次服务。请为这次服务打分：回复 1～5（5 分最满意）。"


class HandoffError(ValueError):
    """A case action that is not allowed now (wrong state, wrong person, bad input)."""


class Sender(Protocol):
    """Pushes text to an openid (the gateway plugs its outbox in); returns what happened."""

    def __call__(self, openid: str, text: str, *, session: Session, kind: str) -> str:
        """ "queued" when it will go out; "window_closed", "quota_used" or "failed" when not."""
        ...


@dataclass(frozen=True)
class Actor:
    """Who does something: written on every event, and checked for permission."""

    label: str  # "commissioner:3 张三", "account:admin1", "farmer:<openid>", "system"
    commissioner_id: int | None = None
    admin: bool = False
    county: str | None = None  # an admin's county; None for a province-level admin

    @classmethod
    def of_commissioner(cls, c: Commissioner) -> Actor:
        """A commissioner acting from WeChat."""
        return cls(f"commissioner:{c.id} {c.name}", c.id, False, c.county)

    @classmethod
    def of_account(cls, a: Account) -> Actor:
        """A console user."""
        return cls(f"account:{a.username}", a.commissioner_id, a.role == "admin", a.county)


SYSTEM = Actor("system")


def farmer(openid: str) -> Actor:
    """The farmer whose case it is."""
    return Actor(f"farmer:{openid}")


def can_view(actor: Actor, case: Case) -> bool:
    """Admins see their county (all if province-level); commissioners their own cases and the
    waiting queue of their county."""
    if actor.admin:
        return actor.county is None or case.county in (None, actor.county)
    if actor.commissioner_id is None:
        return False
    if actor.commissioner_id in (case.commissioner_id, case.offered_to_id):
        return True
    return case.status == "waiting" and case.county in (None, actor.county)


def can_act(actor: Actor, case: Case) -> bool:
    """The assigned commissioner, or an admin who can see the case."""
    if actor.admin:
        return can_view(actor, case)
    return actor.commissioner_id is not None and actor.commissioner_id == case.commissioner_id


def event(
    session: Session,
    case: Case | None,
    actor: Actor,
    action: str,
    detail: str | None = None,
    *,
    from_status: str | None = None,
    now: datetime | None = None,
) -> CaseEvent:
    """Write one attributed, timestamped event (also the audit of views)."""
    ev = CaseEvent(
        case_id=case.id if case is not None else None,
        at=now or utcnow(),
        actor=actor.label[:96],
        action=action,
        from_status=from_status,
        to_status=case.status if case is not None else None,
        detail=detail,
    )
    session.add(ev)
    return ev


def get_case(case_id: int, *, session: Session) -> Case:
    """The case, or HandoffError 「没有 #N」."""
    case = session.get(Case, case_id)
    if case is None:
        raise HandoffError(f"没有 #{case_id} 这个求助单")
    return case


def move(
    session: Session,
    case: Case,
    actor: Actor,
    action: str,
    detail: str | None,
    now: datetime,
    to: str | None = None,
) -> None:
    allowed, target = TRANSITIONS[action]
    if case.status not in allowed:
        raise HandoffError(
            f"#{case.id} 现在是「{STATUS_LABELS[case.status]}」，不能{ACTION_LABELS[action]}"
        )
    before = case.status
    case.status = to or target or case.status
    case.updated_at = now
    event(session, case, actor, action, detail, from_status=before, now=now)


ACTION_LABELS = {
    "claim": "接单",
    "reply": "回复",
    "schedule_visit": "约上门",
    "mark_visited": "记为已上门",
    "close": "结案",
    "reopen": "重新打开",
    "rate": "评分",
}


def aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def require_act(actor: Actor, case: Case) -> None:
    if not can_act(actor, case):
        raise HandoffError(f"#{case.id} 不是您负责的求助单")


def note(case: Case, who: str, text: str, now: datetime, **extra: Any) -> None:
    entry = {"dir": "out" if who != "farmer" else "in", "who": who, "text": text}
    case.transcript = [*(case.transcript or []), {**entry, "at": now.isoformat(), **extra}]


def transcript_of(conversation_id: int, *, session: Session) -> list[dict[str, Any]]:
    """A snapshot of a service record's messages, for the case."""
    rows = session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    ).scalars()
    return [
        {
            "dir": m.direction,
            "who": "farmer" if m.direction == "in" else "bot",
            "text": m.text or f"[{m.msg_type}]",
            "at": m.created_at.isoformat(),
        }
        for m in rows
    ]


def open_case_of(openid: str, *, session: Session) -> Case | None:
    """The farmer's case that is not closed yet, if any (newest)."""
    return session.execute(
        select(Case)
        .where(Case.farmer_openid == openid, Case.status.in_(OPEN_STATUSES))
        .order_by(Case.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def case_summary(case: Case) -> str:
    """The push a commissioner gets: what, where, and how to answer from WeChat."""
    what = " · ".join(x for x in (case.crop, case.category, case.county, case.township) if x)
    photos = sum(1 for m in case.media or [] if m.get("kind", "image") == "image")
    lines = [f"【新求助 #{case.id}】{what or '未说明作物'}"]
    if case.symptoms:
        lines.append(f"症状：{case.symptoms[:200]}")
    if photos:
        lines.append(f"照片 {photos} 张（网页上查看）")
    lines.append(f"回复「接 {case.id}」接单；「#{case.id} 内容」直接回复农户。")
    return "\n".join(lines)


def offer(
    session: Session,
    case: Case,
    decision: routing.Decision,
    now: datetime,
    sender: Sender | None,
    action: str,
) -> None:
    """Offer a case to the routed commissioner (pushing them its summary), or to an admin."""
    case.offered_at = now
    if decision.commissioner_id is None:
        case.offered_to, case.offered_to_id, case.needs_admin = None, None, True
        event(session, case, SYSTEM, action, "无人可接，转管理员", now=now)
        return
    person = session.get(Commissioner, decision.commissioner_id)
    # Both the object and the id, so that permission checks see it before a flush.
    case.offered_to, case.offered_to_id = person, decision.commissioner_id
    case.offered_ids = [*(case.offered_ids or []), decision.commissioner_id]
    event(
        session,
        case,
        SYSTEM,
        action,
        f"commissioner:{decision.commissioner_id} ({decision.reason})",
        now=now,
    )
    if sender is not None and person is not None:
        session.flush()
        sender(person.openid, case_summary(case), session=session, kind="notice")
