"""The parts every case action shares: states, actors and permissions, events, routing offers.

Every transition is checked against TRANSITIONS (an illegal one raises HandoffError with a
message fit for the person who tried it) and written as an attributed CaseEvent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from sqlalchemy import func, select
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


class TemplateSender(Protocol):
    """A Sender that can also reach someone outside the 48 h window (template messages)."""

    def template(
        self,
        openid: str,
        template: str,
        data: Mapping[str, str],
        *,
        session: Session,
        path: str | None = None,
        kind: str = "notice",
    ) -> str:
        """Queue template `template` ("case" or "reply"); "template" when queued."""
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
    """Append to the case's transcript; an outgoing entry whose `delivery` is not "queued" is
    held until the farmer writes again (`held_replies`)."""
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


def _what(case: Case) -> str:
    return " · ".join(x for x in (case.crop, case.category, case.county, case.township) if x)


def case_summary(case: Case, *, for_admin: bool = False) -> str:
    """The push a commissioner gets: what, where, and how to answer from WeChat; an admin is
    told that nobody on duty can take it and where to handle it."""
    photos = sum(1 for m in case.media or [] if m.get("kind", "image") == "image")
    lines = [f"【新求助 #{case.id}】{_what(case) or '未说明作物'}"]
    if case.symptoms:
        lines.append(f"症状：{case.symptoms[:200]}")
    if photos:
        lines.append(f"照片 {photos} 张（网页上查看）")
    if for_admin:
        lines.append(f"没有值班的特派员能接，请在网页控制台 /console/cases/{case.id} 分派或处理。")
    else:
        lines.append(f"回复「接 {case.id}」接单；「#{case.id} 内容」直接回复农户。")
    return "\n".join(lines)


def case_template(case: Case, headline: str, remark: str) -> dict[str, str]:
    """The fields of the "case" template message (to a commissioner or an admin)."""
    return {
        "first": headline,
        "keyword1": f"#{case.id}",
        "keyword2": (_what(case) or "未说明作物")[:20],
        "keyword3": (case.symptoms or "")[:20] or "—",
        "remark": remark,
    }


def reply_template(case: Case) -> dict[str, str]:
    """The fields of the "reply" template message: the farmer is told an answer waits."""
    return {
        "first": f"专家已回复您的求助#{case.id}，回复任意内容查看",
        "keyword1": f"#{case.id}",
        "keyword2": "专家已回复",
        "remark": "回复任意内容查看",
    }


def push_or_template(
    session: Session,
    case: Case,
    sender: Sender,
    openid: str,
    text: str,
    *,
    kind: str,
    template: str,
    data: Mapping[str, str],
    who: str,
    path: str | None = None,
    now: datetime | None = None,
    once: bool = False,
) -> str:
    """Push `text`; if WeChat would refuse it (window closed, quota used), send the template
    message instead when the sender can. Every refusal is a case event. Returns "queued",
    "template" or the refusal ("window_closed", "quota_used", "failed").

    `once`: no second template about this case to `openid` before they write to the account
    again (a farmer's every message need not be a template to a commissioner)."""
    delivery = sender(openid, text, session=session, kind=kind)
    if delivery == "queued":
        return delivery
    via = getattr(sender, "template", None)
    outcome = delivery
    if once and _templated_since_they_wrote(session, case, openid, who):
        detail = f"{who}: {delivery}，模板消息已发过，等对方来消息后可见"
        event(session, case, SYSTEM, "push_refused", detail, now=now)
        return delivery
    if callable(via):
        outcome = via(openid, template, data, session=session, path=path, kind=kind)
    detail = f"{who}: {delivery}" + (TEMPLATED if outcome == "template" else "，无法通知")
    event(session, case, SYSTEM, "push_refused", detail, now=now)
    return outcome


TEMPLATED = "，已改发模板消息"


def _templated_since_they_wrote(session: Session, case: Case, openid: str, who: str) -> bool:
    last_in = session.execute(
        select(func.max(Message.created_at)).where(
            Message.openid == openid, Message.direction == "in"
        )
    ).scalar_one_or_none()
    query = select(CaseEvent.id).where(
        CaseEvent.case_id == case.id,
        CaseEvent.action == "push_refused",
        CaseEvent.detail.like(f"{who}: %{TEMPLATED}"),
    )
    if last_in is not None:
        query = query.where(CaseEvent.at >= last_in)
    return session.execute(query.limit(1)).first() is not None


def admin_openids(case: Case, *, session: Session) -> list[tuple[str, str]]:
    """(label, openid) of the admins to push about a case nobody on duty can take: the county's
    admins bound to WeChat, else the province-level ones."""
    from bot import roster

    found: list[tuple[str, str]] = []
    county_level = False
    for account in roster.admins_for(case.county, session=session):
        openid = account.wechat_openid or (
            account.commissioner.openid if account.commissioner is not None else None
        )
        if not openid:
            continue
        if account.county is None and county_level:
            break  # the county's own admins are enough
        county_level = county_level or account.county is not None
        found.append((f"account:{account.username}", openid))
    return found


def _push_admins(session: Session, case: Case, sender: Sender, now: datetime) -> None:
    admins = admin_openids(case, session=session)
    if not admins:
        event(
            session,
            case,
            SYSTEM,
            "push_refused",
            "没有绑定微信的管理员，只能在网页控制台看到",
            now=now,
        )
        return
    session.flush()
    text = case_summary(case, for_admin=True)
    data = case_template(
        case,
        f"新求助 #{case.id} 无人可接，请处理",
        "没有值班的特派员能接这件事，请在网页控制台分派或处理。",
    )
    for label, openid in admins:
        push_or_template(
            session, case, sender, openid, text, kind="notice", template="case", data=data,
            who=label, path=f"/console/cases/{case.id}", now=now,
        )  # fmt: skip


def offer(
    session: Session,
    case: Case,
    decision: routing.Decision,
    now: datetime,
    sender: Sender | None,
    action: str,
) -> None:
    """Offer a case to the routed commissioner (pushing them its summary, or a template message
    when their window is closed), or to an admin (pushed the same way)."""
    case.offered_at = now
    if decision.commissioner_id is None:
        case.offered_to, case.offered_to_id, case.needs_admin = None, None, True
        event(session, case, SYSTEM, action, "无人可接，转管理员", now=now)
        if sender is not None:
            _push_admins(session, case, sender, now)
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
        data = case_template(
            case,
            f"新求助 #{case.id}，请接单",
            f"回复「接 {case.id}」接单（也可在网页控制台处理）。",
        )
        push_or_template(
            session, case, sender, person.openid, case_summary(case), kind="notice",
            template="case", data=data, who=f"commissioner:{person.id}",
            path=f"/console/cases/{case.id}", now=now,
        )  # fmt: skip


def is_held(entry: Mapping[str, Any]) -> bool:
    """An outgoing transcript entry WeChat refused to push, not yet shown to the farmer."""
    return entry.get("dir") == "out" and entry.get("delivery") not in (None, "queued", "passive")


def held_replies(case: Case) -> list[str]:
    """The held messages for the farmer, as they will read them (oldest first)."""
    return [
        e["text"] if e.get("who") == "system" else f"【专家回复 #{case.id}】{e['text']}"
        for e in case.transcript or []
        if is_held(e)
    ]


def mark_held_delivered(case: Case, how: str = "passive") -> None:
    """The held messages reached the farmer (`how`: "passive" reply or "queued" push)."""
    case.transcript = [
        {**e, "delivery": how, "held": e["delivery"]} if is_held(e) else e
        for e in case.transcript or []
    ]
