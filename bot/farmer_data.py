"""Farmers' conversations for admins, personal data masked, and their deletion on request (PIPL).

Deleting keeps the service record's shape, so the assessment figures stay true: every message
row stays (direction, type, intent, confidence, source, timings, time) with its text, entities,
MsgId and openid removed; the openid becomes a random 「deleted-…」 token, the same for all the
farmer's rows (so "farmers served" still counts them once) and linked to nobody. Cases keep
status, times, crop, category, county and rating; phone, township, symptoms, transcript and media
go. Media files are deleted from disk. The deletion is an audit event without the openid.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bot.case_core import Actor, event
from bot.handoff_models import Case, CaseEvent
from bot.kb_models import KbFeedback
from bot.models import Conversation, MediaFile, Message, OutboxItem
from bot.pii import mask_phone

DELETED = "（已删除）"
# Mobiles and landlines, written with spaces or dashes; 18-digit ID card numbers.
_PHONE = re.compile(
    r"(?<!\d)(?:\+?86[\s-]?)?(?:1[3-9]\d(?:[\s-]?\d){8}|0\d{2,3}[\s-]?\d{7,8})(?!\d)"
)
_ID_CARD = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")


def short_openid(openid: str) -> str:
    """「oAbC…9Z1」: enough to tell farmers apart on a page, not to write to one."""
    if openid.startswith("deleted-"):
        return "已删除"
    return openid if len(openid) <= 8 else f"{openid[:4]}…{openid[-3:]}"


def mask_text(text: str | None) -> str:
    """A message with phone and ID card numbers masked."""
    if not text:
        return ""
    text = _ID_CARD.sub(lambda m: m.group(0)[:3] + "*" * 15, text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def coarse_place(county: str | None, township: str | None = None) -> str:
    """The county only: the township is finer than an admin's list needs."""
    return county or "—"


@dataclass(frozen=True)
class ConversationRow:
    """One service record in the admin's list."""

    id: int
    farmer: str
    started: str
    category: str
    crop: str
    messages: int
    county: str


def _county_of(session: Session, openids: list[str]) -> dict[str, str]:
    rows = session.execute(
        select(Case.farmer_openid, Case.county).where(Case.farmer_openid.in_(openids))
    ).all()
    return {o: c for o, c in rows if c}


def list_conversations(session: Session, county: str | None, limit: int = 100) -> list[Any]:
    """Latest service records; a county admin sees those of farmers with a case in the county."""
    query = select(Conversation).order_by(Conversation.id.desc()).limit(limit)
    if county is not None:
        farmers = select(Case.farmer_openid).where(Case.county == county)
        query = query.where(Conversation.openid.in_(farmers))
    convs = list(session.execute(query).scalars())
    counts = dict(
        session.execute(
            select(Message.conversation_id, func.count())
            .where(Message.conversation_id.in_([c.id for c in convs]))
            .group_by(Message.conversation_id)
        ).all()
    )
    places = _county_of(session, [c.openid for c in convs])
    return [
        ConversationRow(
            c.id,
            short_openid(c.openid),
            f"{c.started_at:%Y-%m-%d %H:%M}",
            c.category or "",
            c.crop or "",
            counts.get(c.id, 0),
            coarse_place(places.get(c.openid)),
        )
        for c in convs
    ]


@dataclass
class ConversationView:
    """One service record, masked, for an admin."""

    id: int
    farmer: str
    county: str
    lines: list[tuple[str, str, str, str]] = field(default_factory=list)  # at, dir, type, text


def view_conversation(session: Session, conv_id: int, viewer: Actor) -> ConversationView | None:
    """The masked record, if the viewer may see it; the view is audited."""
    conv = session.get(Conversation, conv_id)
    if conv is None:
        return None
    county = _county_of(session, [conv.openid]).get(conv.openid)
    if viewer.county is not None and county != viewer.county:
        return None
    view = ConversationView(conv.id, short_openid(conv.openid), coarse_place(county))
    for m in conv.messages:
        text = "（位置已隐去）" if m.msg_type == "location" else mask_text(m.text)
        if m.openid.startswith("deleted-"):
            text = DELETED
        view.lines.append((f"{m.created_at:%m-%d %H:%M}", m.direction, m.msg_type, text))
    event(session, None, viewer, "viewed_conversation", f"conversation {conv.id}")
    return view


def openid_of(session: Session, conv_id: int) -> str | None:
    """The farmer of a service record."""
    conv = session.get(Conversation, conv_id)
    return None if conv is None else str(conv.openid)


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed (counts only)."""

    token: str
    messages: int
    conversations: int
    cases: int
    media_files: int


# endpoints.yml's SQL tracker store (KTP_RASA_TRACKER_DB moves it, as `ketepai run` does).
RASA_TRACKERS = Path(os.environ.get("KTP_RASA_TRACKER_DB") or "var/rasa-trackers.db")


def wipe_rasa_tracker(openid: str, path: Path = RASA_TRACKERS) -> int:
    """Delete the farmer's events from Rasa's SQLite tracker store; how many (0 if none)."""
    if not path.exists():
        return 0
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{path}", future=True)
    try:
        with engine.begin() as conn:
            result = conn.execute(text("DELETE FROM events WHERE sender_id = :o"), {"o": openid})
            return int(result.rowcount or 0)
    except Exception:  # no events table yet (Rasa never ran): nothing to wipe
        return 0
    finally:
        engine.dispose()


def delete_farmer(session: Session, openid: str, media_dir: Path, actor: Actor) -> Deleted:
    """Remove a farmer's personal data, keep anonymised counts; audited (see the module doc)."""
    token = "deleted-" + secrets.token_hex(6)
    msgs = session.execute(
        update(Message)
        .where(Message.openid == openid)
        .values(openid=token, text=None, entities=None, error=None, dedupe_key=None,
                wechat_msg_id=None)
    ).rowcount  # fmt: skip
    convs = session.execute(
        update(Conversation).where(Conversation.openid == openid).values(openid=token)
    ).rowcount
    session.execute(
        update(OutboxItem).where(OutboxItem.openid == openid).values(openid=token, content=DELETED)
    )
    session.execute(
        update(KbFeedback).where(KbFeedback.sender == openid).values(sender=token, text=None)
    )
    files = 0
    for mf in session.execute(select(MediaFile).where(MediaFile.openid == openid)).scalars():
        if mf.path:
            target = (media_dir / mf.path).resolve()
            if media_dir.resolve() in target.parents:
                target.unlink(missing_ok=True)
                files += 1
        mf.openid, mf.path, mf.media_id, mf.sha256, mf.status = token, None, "", None, "deleted"
    cases = list(session.execute(select(Case).where(Case.farmer_openid == openid)).scalars())
    for case in cases:
        case.farmer_openid, case.phone_enc, case.township = token, None, None
        case.symptoms, case.transcript, case.media = None, [], []
    case_ids = [c.id for c in cases]
    session.execute(
        update(CaseEvent)
        .where(
            or_(
                CaseEvent.actor == f"farmer:{openid}"[:96],
                CaseEvent.case_id.in_(case_ids) & CaseEvent.action.in_(("replied", "reply_held")),
            )
        )
        .values(actor="farmer:deleted", detail=None)
        .execution_options(synchronize_session=False)
    )
    summary = Deleted(token, msgs, convs, len(cases), files)
    detail = f"{token}: {msgs} 条消息, {convs} 次咨询, {len(cases)} 个求助单, {files} 个文件"
    event(session, None, actor, "farmer_deleted", detail)
    return summary
