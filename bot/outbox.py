"""The durable outbox: every customer-service push is a row first, then sent with retries.

WeChat allows pushes only within 48 h of the farmer's last message, and at most 5 per message
(45015 and 45047). Those are final outcomes, recorded on the row and on the service record; other
failures are retried with exponential backoff up to MAX_ATTEMPTS. One farmer's pushes go out in
order; different farmers' in parallel. Several processes may run a sender: a row is claimed by a
conditional UPDATE, and a claim that outlives a crashed process expires.

Template messages (msgtype "template") reach people outside that window: a commissioner who has
not written for 48 h gets a new case, a farmer learns that an answer waits for them. They are
rows like the rest (durable, retried with the same backoff) but are not bound to the window or
its 5 pushes, and do not count towards them. A row names the template by role ("case",
"reply"); the sender maps the role to the WeChat template_id it was configured with
(WECHAT_TEMPLATE_CASE / WECHAT_TEMPLATE_REPLY), so that the action server needs no WeChat set-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot import records
from bot.models import Message, OutboxItem
from bot.records import ReplyRecord
from bot.wechat_client import QUOTA_USED, WINDOW_CLOSED, WeChatApi, WeChatError

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=48)
PUSHES_PER_MESSAGE = 5
MAX_ATTEMPTS = 8
CLAIM_FOR = timedelta(seconds=60)
FINAL = {WINDOW_CLOSED: "expired", QUOTA_USED: "quota"}
# Template messages: the template is not configured here, WeChat does not know it (40037), the
# person unfollowed the account (43004) or the openid is not of this account (40003). Retrying
# cannot help: the row fails at once, with the reason.
TEMPLATE_UNSET = -2
TEMPLATE_FINAL = frozenset({TEMPLATE_UNSET, 40003, 40037, 43004, 47001})
TEMPLATE_ROLES = ("case", "reply")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def enqueue(
    session: Session,
    *,
    reply_to: Message,
    content: str,
    source: str,
    kind: str = "answer",
) -> OutboxItem:
    """Record a push on the service record and queue it, in the caller's transaction."""
    now = _now()
    out = records.add_reply(session, reply_to, ReplyRecord(content, source, "push"), now)
    out.status = "queued"
    session.flush()
    item = OutboxItem(
        openid=reply_to.openid,
        msgtype="text",
        content=content,
        kind=kind,
        message_id=out.id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(item)
    return item


def enqueue_template(
    session: Session,
    *,
    openid: str,
    template: str,
    data: Mapping[str, str],
    path: str | None = None,
    kind: str = "notice",
) -> OutboxItem:
    """Queue a template message (role `template`: "case" or "reply") in the caller's
    transaction; `path` (e.g. "/console/cases/12") becomes its link when a public URL is set."""
    if template not in TEMPLATE_ROLES:
        raise ValueError(f"unknown template role {template!r}")
    now = _now()
    body = {"template": template, "data": dict(data), "path": path}
    item = OutboxItem(
        openid=openid,
        msgtype="template",
        content=json.dumps(body, ensure_ascii=False),
        kind=kind,
        message_id=None,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(item)
    return item


def window_refusal(session: Session, openid: str, now: datetime) -> int | None:
    """45015/45047 when WeChat would refuse a push to `openid` now, else None."""
    last_in = session.execute(
        select(func.max(Message.created_at)).where(
            Message.openid == openid, Message.direction == "in"
        )
    ).scalar_one_or_none()
    if last_in is None or now - _aware(last_in) > WINDOW:
        return WINDOW_CLOSED
    sent = session.execute(
        select(func.count(OutboxItem.id)).where(
            OutboxItem.openid == openid,
            OutboxItem.msgtype == "text",  # template messages do not use the quota
            OutboxItem.status == "sent",
            OutboxItem.sent_at >= last_in,
        )
    ).scalar_one()
    return QUOTA_USED if sent >= PUSHES_PER_MESSAGE else None


def backoff(attempts: int, base_s: float) -> timedelta:
    """Delay before attempt number `attempts + 1`: base, 2x, 4x... capped at 10 minutes."""
    return timedelta(seconds=min(600.0, base_s * 2 ** max(0, attempts - 1)))


class OutboxSender:
    """Sends due outbox rows; one per process, woken on enqueue and polling otherwise."""

    def __init__(
        self,
        sessions: sessionmaker,
        wechat: WeChatApi,
        *,
        poll_s: float = 1.0,
        base_backoff_s: float = 2.0,
        batch: int = 100,
        templates: Mapping[str, str] | None = None,
        public_url: str | None = None,
    ) -> None:
        self._sessions = sessions
        # Template role ("case", "reply") → WeChat template_id; links are public_url + path.
        self._templates = {k: v for k, v in (templates or {}).items() if v}
        self._public_url = public_url.rstrip("/") if public_url else None
        self._wechat = wechat
        self._poll = poll_s
        self._base_backoff = base_backoff_s
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Send forever (until cancelled)."""
        while True:
            try:
                await self.run_once()
            except Exception:  # a database hiccup must not kill the sender
                log.exception("outbox pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim and send every due row; return how many were attempted."""
        claimed = await asyncio.to_thread(self._claim)
        by_farmer: dict[str, list[int]] = {}
        for item_id, openid in claimed:
            by_farmer.setdefault(openid, []).append(item_id)
        await asyncio.gather(*(self._send_in_order(ids) for ids in by_farmer.values()))
        return len(claimed)

    def _claim(self) -> list[tuple[int, str]]:
        now = _now()
        with self._sessions() as session, session.begin():
            # A claim left by a crashed process expires and the row becomes due again.
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.status == "sending", OutboxItem.claimed_until < now)
                .values(status="pending", claimed_until=None)
            )
        rows = self._pending()
        blocked: set[str] = set()
        due: list[tuple[int, str]] = []
        for item_id, openid, next_at in rows:
            if openid in blocked:
                continue
            if _aware(next_at) > now:
                blocked.add(openid)  # an earlier push waits: keep the farmer's order
                continue
            due.append((item_id, openid))
        claimed: list[tuple[int, str]] = []
        with self._sessions() as session, session.begin():
            for item_id, openid in due:
                result = session.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id == item_id, OutboxItem.status == "pending")
                    .values(status="sending", claimed_until=now + CLAIM_FOR)
                )
                if result.rowcount == 1:
                    claimed.append((item_id, openid))
        return claimed

    def _pending(self) -> list[tuple[int, str, datetime]]:
        with self._sessions() as session:
            return [
                (int(r.id), str(r.openid), r.next_attempt_at)
                for r in session.execute(
                    select(OutboxItem.id, OutboxItem.openid, OutboxItem.next_attempt_at)
                    .where(OutboxItem.status == "pending")
                    .order_by(OutboxItem.id)
                    .limit(self._batch)
                )
            ]

    async def _send_in_order(self, ids: list[int]) -> None:
        for n, item_id in enumerate(ids):
            if not await self._send_one(item_id):
                # Not sent: give the later ones back, to go after it.
                await asyncio.to_thread(self._release, ids[n + 1 :])
                return

    def _release(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._sessions() as session, session.begin():
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id.in_(ids), OutboxItem.status == "sending")
                .values(status="pending", claimed_until=None)
            )

    async def _send_one(self, item_id: int) -> bool:
        """Send one claimed row; True when it reached a final state other than a retry."""

        def load() -> tuple[str, str, str, int | None]:
            with self._sessions() as session:
                item = session.get(OutboxItem, item_id)
                assert item is not None
                if item.msgtype == "template":  # not bound to the 48 h window
                    return item.openid, item.msgtype, item.content, None
                refusal = window_refusal(session, item.openid, _now())
                return item.openid, item.msgtype, item.content, refusal

        openid, msgtype, content, refusal = await asyncio.to_thread(load)
        error: WeChatError | None = None
        if refusal is not None:
            error = WeChatError(refusal, "refused before sending (48 h window / quota)")
        else:
            try:
                if msgtype == "template":
                    await self._send_template(openid, content)
                else:
                    await self._wechat.send_text(openid, content)
            except WeChatError as exc:
                error = exc
        return await asyncio.to_thread(self._settle, item_id, error)

    async def _send_template(self, openid: str, content: str) -> None:
        try:
            body = json.loads(content)
            role, data, path = str(body["template"]), dict(body["data"]), body.get("path")
        except (ValueError, KeyError, TypeError):
            raise WeChatError(TEMPLATE_UNSET, "unreadable template row") from None
        template_id = self._templates.get(role)
        if not template_id:
            env = {"case": "WECHAT_TEMPLATE_CASE", "reply": "WECHAT_TEMPLATE_REPLY"}.get(role, role)
            raise WeChatError(TEMPLATE_UNSET, f"template {role!r} not configured (set {env})")
        url = f"{self._public_url}{path}" if self._public_url and path else None
        await self._wechat.send_template(openid, template_id, data, url)

    def _settle(self, item_id: int, error: WeChatError | None) -> bool:
        now = _now()
        with self._sessions() as session, session.begin():
            item = session.get(OutboxItem, item_id)
            assert item is not None
            msg = session.get(Message, item.message_id) if item.message_id else None
            item.attempts += 1
            item.claimed_until = None
            if error is None:
                item.status, item.sent_at, item.errcode, item.error = "sent", now, None, None
            elif item.msgtype == "template" and error.errcode in TEMPLATE_FINAL:
                item.status, item.errcode, item.error = "failed", error.errcode, str(error)
                log.error("template message %s to %s refused: %s", item_id, item.openid, error)
            elif error.errcode in FINAL:
                item.status = FINAL[error.errcode]
                item.errcode, item.error = error.errcode, str(error)
                log.warning("push %s to %s not allowed: %s", item_id, item.openid, error)
                if item.kind == "commissioner":
                    # A commissioner's answer is never lost: held on its case until the farmer
                    # writes, and the farmer is told by template.
                    from bot.handoff_push import hold_refused_reply

                    hold_refused_reply(session, item)
            elif item.attempts >= MAX_ATTEMPTS:
                item.status, item.errcode, item.error = "failed", error.errcode, str(error)
                log.error("push %s to %s failed for good: %s", item_id, item.openid, error)
            else:
                item.status, item.errcode, item.error = "pending", error.errcode, str(error)
                item.next_attempt_at = now + backoff(item.attempts, self._base_backoff)
            if msg is not None:
                msg.status = {"pending": "queued"}.get(item.status, item.status)
                msg.error = item.error
            return item.status != "pending"
