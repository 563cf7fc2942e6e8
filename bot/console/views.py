"""Console pages: the queue, a case, and its actions; every view of a case is audited."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot import handoff, pii
from bot.case_core import STATUS_LABELS, TRANSITIONS, aware
from bot.console import pages
from bot.console.auth import Login, check_csrf
from bot.console.deps import DEPS, Deps, now_utc, run_db
from bot.handoff import Actor, HandoffError, can_act, can_view, event
from bot.handoff_models import OPEN_STATUSES, Case, CaseEvent
from bot.models import MediaFile

CATEGORY_LABELS = {
    "disease": "病害",
    "pest": "虫害",
    "cultivation": "栽培管理",
    "fertilizer": "土壤肥料",
    "pesticide_use": "农药使用",
    "storage": "贮藏保鲜",
    "livestock": "畜禽水产",
}


def _waited(case: Case, now: datetime) -> str:
    minutes = int((now - aware(case.created_at)).total_seconds() // 60)
    return f"{minutes // 60} 小时 {minutes % 60} 分" if minutes >= 60 else f"{minutes} 分"


def _row(case: Case, actor: Actor, now: datetime) -> pages.Row:
    return pages.Row(
        case.id,
        STATUS_LABELS[case.status],
        case.crop or "",
        case.county or "",
        (case.symptoms or "")[:40],
        _waited(case, now),
        case.status == "waiting" and actor.commissioner_id is not None,
    )


def _refuse(login: Login, text: str, status: int = 403) -> web.Response:
    return pages.html(
        pages.message_page("不能这样做", text, status, login.username, login.csrf), status
    )


async def queue(request: web.Request) -> web.StreamResponse:
    """GET /console/: the waiting queue the viewer may see, and their own (admins: all open)."""
    login: Login = request["login"]
    actor = login.actor

    def work(session: Session) -> tuple[list[pages.Row], list[pages.Row]]:
        now = now_utc()
        query = select(Case).where(Case.status.in_(OPEN_STATUSES)).order_by(Case.id)
        if actor.county is not None:  # a province-level admin sees every county
            query = query.where(
                or_(
                    Case.county == actor.county,
                    Case.county.is_(None),
                    Case.commissioner_id == actor.commissioner_id,
                )
            )
        cases = [c for c in session.execute(query).scalars() if can_view(actor, c)]
        waiting = [_row(c, actor, now) for c in cases if c.status == "waiting"]
        if actor.admin:
            mine = [_row(c, actor, now) for c in cases if c.status != "waiting"]
        else:
            mine = [
                _row(c, actor, now) for c in cases if c.commissioner_id == actor.commissioner_id
            ]
        return waiting, mine

    waiting, mine = await run_db(request, work)
    title = "本县处理中" if login.actor.admin else "我的求助单"
    return pages.html(pages.queue_page(login.username, login.csrf, waiting, mine, title))


def _window_text(deps: Deps, case: Case, session: Session) -> str:
    now = now_utc()
    w = deps.window(case.farmer_openid, session=session, now=now)
    if not w.is_open(now):
        return (
            "微信 48 小时窗口：已关闭（或推送已用完）。回复会保存在求助单上，并用模板消息通知农户；"
            "农户下次发消息时送达。"
        )
    assert w.open_until is not None
    left = w.open_until - now
    hours = int(left.total_seconds() // 3600)
    return (
        f"微信 48 小时窗口：还剩 {hours} 小时 {int(left.total_seconds() % 3600 // 60)} 分，"
        f"可推送 {w.pushes_left} 条。"
    )


def _phone(case: Case, actor: Actor, session: Session) -> str:
    if not case.phone_enc:
        return "（未留）"
    phone = pii.decrypt_phone(case.phone_enc)
    if actor.commissioner_id is not None and actor.commissioner_id == case.commissioner_id:
        event(session, case, actor, "viewed_phone")
        return phone
    return pii.mask_phone(phone)


def _next_steps(case: Case, actor: Actor) -> list[str]:
    if not can_act(actor, case):
        return []
    names = {
        "reply": "reply",
        "schedule_visit": "visit",
        "mark_visited": "visited",
        "close": "close",
        "reopen": "reopen",
    }
    steps = [name for action, name in names.items() if case.status in TRANSITIONS[action][0]]
    return [s for s in steps if s != "reopen" or actor.admin or case.commissioner_id]


def _case_view(deps: Deps, case: Case, actor: Actor, session: Session) -> pages.CaseView:
    holder = case.commissioner.name if case.commissioner else "—"
    offered = case.offered_to.name if case.offered_to else ("管理员" if case.needs_admin else "—")
    facts = [
        ("作物", case.crop or "未说明"),
        ("问题类别", CATEGORY_LABELS.get(case.category or "", case.category or "未说明")),
        ("地点", " ".join(x for x in (case.county, case.township) if x) or "未说明"),
        ("电话", _phone(case, actor, session)),
        ("症状", case.symptoms or ""),
        ("负责专家", holder),
        ("待接单人", offered if case.status == "waiting" else "—"),
        ("上门", case.visit_when or "—"),
        ("处理结果", case.resolution or "—"),
        ("农户评分", str(case.rating) if case.rating else "—"),
    ]
    events = session.execute(
        select(CaseEvent)
        .where(CaseEvent.case_id == case.id, CaseEvent.action != "viewed")
        .order_by(CaseEvent.id)
    ).scalars()
    photos = [
        f"/console/cases/{case.id}/media/{i}"
        for i, m in enumerate(case.media or [])
        if m.get("kind", "image") == "image"
    ]
    return pages.CaseView(
        id=case.id,
        status=STATUS_LABELS[case.status],
        facts=facts,
        transcript=list(case.transcript or []),
        photos=photos,
        events=[
            (aware(ev.at).strftime("%Y-%m-%d %H:%M"), ev.actor, ev.action, ev.detail or "")
            for ev in events
        ],
        window=_window_text(deps, case, session),
        claimable=case.status == "waiting" and actor.commissioner_id is not None,
        can_act=can_act(actor, case),
        next_steps=_next_steps(case, actor),
    )


def _case_id(request: web.Request) -> int:
    try:
        return int(request.match_info["case_id"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def case_page(request: web.Request) -> web.StreamResponse:
    """GET /console/cases/{id}: the case, if the viewer may see it (the view is audited)."""
    login: Login = request["login"]
    deps = request.config_dict[DEPS]
    cid = _case_id(request)

    def work(session: Session) -> pages.CaseView | str:
        case = session.get(Case, cid)
        if case is None:
            return f"没有 #{cid} 这个求助单"
        if not can_view(login.actor, case):
            event(session, case, login.actor, "view_refused")
            return f"#{cid} 不是您能查看的求助单"
        event(session, case, login.actor, "viewed")
        return _case_view(deps, case, login.actor, session)

    view = await run_db(request, work)
    if isinstance(view, str):
        return _refuse(login, view, 404 if view.startswith("没有") else 403)
    return pages.html(pages.case_page(login.username, login.csrf, view))


async def case_action(request: web.Request) -> web.StreamResponse:
    """POST /console/cases/{id}/{action}: claim, reply, visit, visited, close, reopen."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    deps = request.config_dict[DEPS]
    cid, action, actor = _case_id(request), request.match_info["action"], login.actor

    def work(session: Session) -> str | None:
        case = session.get(Case, cid)
        if case is None or not can_view(actor, case):
            return f"#{cid} 不是您能查看的求助单"
        try:
            if action == "claim":
                handoff.claim(cid, actor, session=session)
            elif action == "reply":
                handoff.reply(cid, actor, form.get("text", ""), session=session, sender=deps.sender)
            elif action == "visit":
                handoff.schedule_visit(cid, actor, form.get("when", ""), session=session)
            elif action == "visited":
                handoff.mark_visited(cid, actor, session=session)
            elif action == "close":
                handoff.close(
                    cid, actor, form.get("resolution", ""), session=session, sender=deps.sender
                )
            elif action == "reopen":
                handoff.reopen(cid, actor, "管理员重新打开", session=session, sender=deps.sender)
            else:
                return "没有这个操作"
        except HandoffError as exc:
            return str(exc)
        return None

    refused = await run_db(request, work)
    if refused is not None:
        return _refuse(login, refused, 403 if "不是您" in refused else 409)
    raise web.HTTPSeeOther(f"/console/cases/{cid}")


async def case_media(request: web.Request) -> web.StreamResponse:
    """GET /console/cases/{id}/media/{n}: a farmer's photo, downloaded by the gateway."""
    login: Login = request["login"]
    deps = request.config_dict[DEPS]
    cid, index = _case_id(request), int(request.match_info["n"])

    def work(session: Session) -> str | None:
        case = session.get(Case, cid)
        if case is None or not can_view(login.actor, case) or index >= len(case.media or []):
            return None
        ref: dict[str, Any] = case.media[index]
        if ref.get("path"):
            return str(ref["path"])
        row = session.execute(
            select(MediaFile.path).where(
                MediaFile.media_id == ref.get("media_id"), MediaFile.status == "stored"
            )
        ).scalar_one_or_none()
        return row

    rel = await run_db(request, work)
    base = Path(deps.media_dir()) if deps.media_dir is not None else None
    if rel is None or base is None:
        raise web.HTTPNotFound()
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)
