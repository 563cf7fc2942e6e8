"""The handoff's ties to WeChat's customer-service limits: the outbox as a Sender, and the window.

A push is possible for 48 h after the farmer's last message, at most 5 per message; the console
shows both, and a reply that WeChat would refuse is held (not dropped) until the farmer writes.
Outside the window people are reached by template messages (`OutboxPush.template`), which the
outbox sends whatever the window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import outbox
from bot.models import Message, OutboxItem
from bot.roster import utcnow
from bot.wechat_client import QUOTA_USED, WINDOW_CLOSED

REFUSALS = {WINDOW_CLOSED: "window_closed", QUOTA_USED: "quota_used"}


@dataclass(frozen=True)
class Window:
    """The customer-service window towards one openid."""

    open_until: datetime | None  # None: the farmer never wrote, nothing can be pushed
    pushes_left: int

    def is_open(self, now: datetime) -> bool:
        """Whether a push can go out now."""
        return self.open_until is not None and now < self.open_until and self.pushes_left > 0


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def window_of(openid: str, *, session: Session, now: datetime | None = None) -> Window:
    """When the 48 h window closes and how many of its 5 pushes are left."""
    now = now or utcnow()
    last_in = session.execute(
        select(func.max(Message.created_at)).where(
            Message.openid == openid, Message.direction == "in"
        )
    ).scalar_one_or_none()
    if last_in is None:
        return Window(None, 0)
    last_in = _aware(last_in)
    sent = session.execute(
        select(func.count(OutboxItem.id)).where(
            OutboxItem.openid == openid,
            OutboxItem.msgtype == "text",  # template messages do not use the 5 pushes
            OutboxItem.status.in_(("pending", "sending", "sent")),
            OutboxItem.created_at >= last_in,
        )
    ).scalar_one()
    return Window(last_in + outbox.WINDOW, max(0, outbox.PUSHES_PER_MESSAGE - int(sent)))


class OutboxPush:
    """The handoff's Sender on the gateway's durable outbox: customer-service text within the
    window, and template messages (`template`) for when the window is closed."""

    def __call__(self, openid: str, text: str, *, session: Session, kind: str) -> str:
        """Queue a text push; "queued", or why WeChat would refuse it now (nothing queued)."""
        now = utcnow()
        refusal = outbox.window_refusal(session, openid, now)
        if refusal is not None:
            return REFUSALS.get(refusal, "failed")
        last_in = session.execute(
            select(Message)
            .where(Message.openid == openid, Message.direction == "in")
            .order_by(Message.id.desc())
            .limit(1)
        ).scalar_one()
        outbox.enqueue(session, reply_to=last_in, content=text, source=f"handoff:{kind}", kind=kind)
        return "queued"

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
        """Queue a template message ("case" or "reply"); "template" when queued."""
        outbox.enqueue_template(
            session, openid=openid, template=template, data=data, path=path, kind=kind
        )
        return "template"


outbox_sender = OutboxPush()


_REPLY = re.compile(r"^【专家回复 #(\d+)】(.*)$", re.S)
DELIVERY_OF = {"expired": "window_closed", "quota": "quota_used"}


def hold_refused_reply(session: Session, item: OutboxItem) -> bool:
    """A commissioner's reply that WeChat refused when it was sent (45015/45047, though our
    record said the window was open): hold it on the case like one refused at once, and tell
    the farmer by template. True when a case entry was found and held."""
    from bot import case_core
    from bot.handoff_models import Case

    m = _REPLY.match(item.content or "")
    if item.kind != "commissioner" or m is None:
        return False
    case = session.get(Case, int(m.group(1)))
    if case is None:
        return False
    entries = list(case.transcript or [])
    for n in range(len(entries) - 1, -1, -1):
        e = entries[n]
        if e.get("dir") == "out" and e.get("delivery") == "queued" and e.get("text") == m.group(2):
            break
    else:
        return False
    delivery = DELIVERY_OF.get(str(item.status), "failed")
    notified = any(e.get("notified") == "template" for e in entries if case_core.is_held(e))
    if not notified:
        outbox.enqueue_template(
            session,
            openid=case.farmer_openid,
            template="reply",
            data=case_core.reply_template(case),
            kind="commissioner",
        )
    entries[n] = {**entries[n], "delivery": delivery, "notified": "template"}
    case.transcript = entries
    now = utcnow()
    detail = f"WeChat refused when sending ({item.errcode}); farmer told by template"
    case_core.event(session, case, case_core.SYSTEM, "reply_held", detail, now=now)
    return True
