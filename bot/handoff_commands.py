"""WeChat both ways during a case: commissioners' commands, and farmers' messages forwarded.

The gateway calls `handle_commissioner_text` for a message from a bound commissioner, and
`route_farmer_message` for a farmer's message before it would go to Rasa; either returns None
when the message is not theirs to handle.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import handoff, roster
from bot.case_core import (
    OPEN_STATUSES,
    STATUS_LABELS,
    Actor,
    HandoffError,
    Sender,
    case_template,
    event,
    farmer,
    held_replies,
    mark_held_delivered,
    note,
    open_case_of,
    push_or_template,
)
from bot.handoff_models import Case
from bot.roster import utcnow

HELP = (
    "指令：\n「接 12」接单\n「#12 内容」回复农户\n「访 12 明天上午」约上门\n"
    "「已访 12」记为已上门\n「结 12 已解决」结案\n「我的」我的求助单"
)
RATING_WINDOW = timedelta(days=7)
_ID = r"\s*#?\s*(\d+)"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("reply", re.compile(r"^#\s*(\d+)\s*[:,，、]?\s*(.*)$", re.S)),
    ("claim", re.compile(rf"^(?:接单|接|claim){_ID}\s*$", re.I)),
    ("visited", re.compile(rf"^(?:已访|已上门|visited){_ID}\s*(.*)$", re.I | re.S)),
    ("visit", re.compile(rf"^(?:访|上门|visit){_ID}\s*(.*)$", re.I | re.S)),
    ("close", re.compile(rf"^(?:结案|结|close){_ID}\s*(.*)$", re.I | re.S)),
    ("mine", re.compile(r"^(?:我的|我的单|mine|my)$", re.I)),
    ("help", re.compile(r"^(?:帮助|指令|help|\?)$", re.I)),
)
NOT_SOLVED = re.compile(r"没解决|没有解决|还没好|不行|没用")


@dataclass(frozen=True)
class Command:
    """A commissioner's command: what, on which case, with what text."""

    kind: str  # reply, claim, visit, visited, close, mine, help
    case_id: int | None = None
    arg: str = ""


def normalize(text: str) -> str:
    """Full-width to half-width (＃１２ → #12, full-width spaces), trimmed."""
    return unicodedata.normalize("NFKC", text).strip()


def _normalize_with_map(text: str) -> tuple[str, list[int]]:
    """`normalize` without the trim, and for each normalized character its original index."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded)
        origin.extend([i] * len(folded))
    return "".join(out), origin


def parse_command(text: str) -> Command | None:
    """The command in a commissioner's message, or None if it is not one.

    The command word and case number are read full-width-blind (＃１２ is #12); the text that
    goes to the farmer is kept exactly as typed, Chinese punctuation included.
    """
    folded, origin = _normalize_with_map(text)
    lead = len(folded) - len(folded.lstrip())
    body = folded.strip()
    for kind, pattern in PATTERNS:
        m = pattern.match(body)
        if m:
            groups = m.groups()
            case_id = int(groups[0]) if groups and groups[0] else None
            arg = ""
            if len(groups) > 1 and groups[1] is not None:
                start = m.start(2) + lead
                arg = text[origin[start] :].strip() if start < len(origin) else ""
            return Command(kind, case_id, arg)
    return None


def _default_sender() -> Sender:
    from bot.handoff_push import outbox_sender

    return outbox_sender


def _mine(actor: Actor, session: Session) -> str:
    rows = session.execute(
        select(Case)
        .where(Case.commissioner_id == actor.commissioner_id, Case.status.in_(OPEN_STATUSES))
        .order_by(Case.id)
    ).scalars()
    lines = [
        f"#{c.id} {STATUS_LABELS[c.status]} {c.crop or ''} {(c.symptoms or '')[:20]}".rstrip()
        for c in rows
    ]
    return "您手上的求助单：\n" + "\n".join(lines) if lines else "您手上没有未结的求助单。"


def handle_commissioner_text(
    openid: str,
    text: str,
    *,
    session: Session,
    sender: Sender | None = None,
    now: datetime | None = None,
) -> str | None:
    """Carry out a bound commissioner's command; the reply for them, or None if not one."""
    person = roster.commissioner_by_openid(openid, session=session)
    if person is None or not person.active:
        return None
    actor = Actor.of_commissioner(person)
    cmd = parse_command(text)
    if cmd is None:
        return "没看懂这条指令。\n" + HELP
    try:
        return _run(cmd, actor, session, sender or _default_sender(), now or utcnow())
    except HandoffError as exc:
        return str(exc)


def _run(cmd: Command, actor: Actor, session: Session, sender: Sender, now: datetime) -> str:
    if cmd.kind == "help":
        return HELP
    if cmd.kind == "mine":
        return _mine(actor, session)
    assert cmd.case_id is not None  # every other pattern captures an id
    cid = cmd.case_id
    if cmd.kind == "claim":
        handoff.claim(cid, actor, session=session, now=now)
        return f"已接单 #{cid}。回复「#{cid} 内容」答复农户。"
    if cmd.kind == "reply":
        out = handoff.reply(cid, actor, cmd.arg, session=session, sender=sender, now=now)
        if out.delivered:
            return f"已发给农户（#{cid}）。"
        told = "已用模板消息通知农户「专家已回复」，" if out.notified else ""
        return (
            f"#{cid} 农户的微信 48 小时窗口已关闭或推送已用完，回复已保存在求助单上，"
            f"{told}农户下次发消息时会自动送达。"
        )
    if cmd.kind == "visit":
        handoff.schedule_visit(cid, actor, cmd.arg, session=session, now=now)
        return f"已记下 #{cid} 上门时间：{cmd.arg}。上门后回复「已访 {cid}」。"
    if cmd.kind == "visited":
        handoff.mark_visited(cid, actor, cmd.arg, session=session, now=now)
        return f"已记下 #{cid} 已上门。"
    handoff.close(cid, actor, cmd.arg or "已解决", session=session, sender=sender, now=now)
    return f"#{cid} 已结案，已请农户评分。"


@dataclass(frozen=True)
class ForwardResult:
    """What became of a farmer's message during a case."""

    case_id: int
    action: str  # "forwarded", "rated", "reopened", "delivered" (held answers of a closed case)
    reply: str | None  # passive reply for the farmer (held answers, or a short note)
    forwarded_to: str | None = None  # the commissioner's openid the message was pushed to
    paused: bool = True  # the bot stays out of the way (Rasa ConversationPaused)


def _newest_closed(openid: str, session: Session) -> Case | None:
    return session.execute(
        select(Case)
        .where(Case.farmer_openid == openid, Case.status == "closed")
        .order_by(Case.closed_at.desc(), Case.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _awaiting_rating(case: Case | None, now: datetime) -> Case | None:
    if case is None or case.closed_at is None or case.rating is not None:
        return None
    return case if now - handoff.aware(case.closed_at) <= RATING_WINDOW else None


def route_farmer_message(
    openid: str,
    text: str | None,
    media: Iterable[Mapping[str, Any]] = (),
    *,
    session: Session,
    sender: Sender | None = None,
    now: datetime | None = None,
) -> ForwardResult | None:
    """Forward a farmer's message to their case's commissioner, or take a rating; None: the
    farmer has no open case and the bot answers as usual."""
    now = now or utcnow()
    clean = normalize(text or "")
    case = open_case_of(openid, session=session)
    if case is None:
        closed = _newest_closed(openid, session)
        if closed is not None and held_replies(closed):
            # Answers (and the rating request) WeChat would not push when they were written:
            # the farmer's message opened the window, they read them now.
            held = held_replies(closed)
            mark_held_delivered(closed)
            note(closed, "farmer", clean or "[消息]", now)
            event(session, closed, handoff.SYSTEM, "reply_delivered", f"{len(held)} 条", now=now)
            return ForwardResult(closed.id, "delivered", "\n\n".join(held), None, False)
        done = _awaiting_rating(closed, now)
        if done is None:
            return None
        m = re.fullmatch(r"([1-5])\s*分?", clean)
        if m:
            handoff.rate(done.id, farmer(openid), int(m.group(1)), session=session, now=now)
            return ForwardResult(
                done.id, "rated", "谢谢您的评分！有新问题随时发给我。", None, False
            )
        if NOT_SOLVED.search(clean):
            handoff.reopen(done.id, farmer(openid), clean, session=session, sender=sender, now=now)
            return ForwardResult(
                done.id, "reopened", f"已重新打开求助单 #{done.id}，专家会再联系您。"
            )
        return None
    items = [dict(m) for m in media]
    shown = clean or ("[图片]" if items else "[消息]")
    note(case, "farmer", shown, now)
    if items:
        case.media = [*(case.media or []), *items]
    case.updated_at = now
    event(session, case, farmer(openid), "farmer_message", shown, now=now)
    holder = case.commissioner or case.offered_to
    if holder is not None:
        push_or_template(
            session, case, sender or _default_sender(), holder.openid,
            f"#{case.id} 农户：{shown}", kind="notice", template="case",
            data=case_template(case, f"#{case.id} 农户发来新消息", shown[:40]),
            who=f"commissioner:{holder.id}", path=f"/console/cases/{case.id}", now=now,
            once=True,
        )  # fmt: skip
    held = held_replies(case)
    if held:
        mark_held_delivered(case)
        event(session, case, handoff.SYSTEM, "reply_delivered", f"{len(held)} 条", now=now)
        reply = "\n\n".join(held)
    else:
        reply = f"已转给专家（求助单 #{case.id}），请稍候。"
    return ForwardResult(case.id, "forwarded", reply, holder.openid if holder else None)
