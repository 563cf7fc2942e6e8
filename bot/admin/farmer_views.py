"""/admin/farmers: farmers' service records for admins (masked, audited) and deletion on request."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web
from sqlalchemy.orm import Session

from bot import farmer_data
from bot.admin import pages
from bot.admin.access import scope_of
from bot.console.auth import Login, check_csrf
from bot.console.deps import DEPS, run_db

e = pages.e
CONFIRM = "删除"


def media_dir(request: web.Request) -> Path:
    """Where farmers' photos and voice are stored (the gateway's media folder)."""
    deps = request.config_dict[DEPS]
    if deps.media_dir is not None:
        return Path(deps.media_dir())
    return Path(os.environ.get("KTP_MEDIA_DIR") or "var/media")


def _frame(login: Login, title: str, body: str, status: int = 200) -> web.Response:
    scope = login.actor.county or "全省"
    page = pages.layout(title, body, user=login.username, csrf=login.csrf, scope=scope)
    return pages.html(page, status)


async def farmers(request: web.Request) -> web.StreamResponse:
    """GET /admin/farmers: the latest service records, openids shortened."""
    login: Login = request["login"]
    county = scope_of(login)
    rows = await run_db(request, lambda s: farmer_data.list_conversations(s, county))
    body = "".join(
        f'<tr><td><a href="/admin/farmers/{r.id}">#{r.id}</a></td><td>{e(r.farmer)}</td>'
        f"<td>{e(r.started)}</td><td>{e(r.category)}</td><td>{e(r.crop)}</td>"
        f"<td>{r.messages}</td><td>{e(r.county)}</td></tr>"
        for r in rows
    )
    notice = request.query.get("notice", "")
    return _frame(
        login,
        "农户咨询记录",
        (f'<p class="ok" id="notice">{e(notice)}</p>' if notice else "")
        + "<p class=muted>手机号已打码，openid 已缩短，只显示到县；每次查看都有记录。</p>"
        + '<table id="conversations"><tr><th>记录</th><th>农户</th><th>开始</th><th>类别</th>'
        f"<th>作物</th><th>消息</th><th>县</th></tr>{body}</table>",
    )


async def farmer_record(request: web.Request) -> web.StreamResponse:
    """GET /admin/farmers/{conv_id}: one record, masked; the view is audited."""
    login: Login = request["login"]
    conv_id = int(request.match_info["conv_id"])

    def work(session: Session) -> farmer_data.ConversationView | None:
        return farmer_data.view_conversation(session, conv_id, login.actor)

    view = await run_db(request, work)
    if view is None:
        return _frame(login, "没有这条记录", '<p class="err">没有这条记录，或不在您的县。</p>', 404)
    lines = "".join(
        f'<p class="{"in" if d == "in" else "out"}"><span class="muted">{e(at)} {e(t)}</span>'
        f"<br>{e(text)}</p>"
        for at, d, t, text in view.lines
    )
    delete = pages.form(
        f"/admin/farmers/{view.id}/delete",
        login.csrf,
        f"<label>农户要求删除其个人信息时，输入「{CONFIRM}」确认 "
        '<input type="text" name="confirm" id="confirm"></label>',
        "删除该农户的个人信息",
        "delete-farmer",
    )
    body = (
        f'<p>农户：<b id="farmer">{e(view.farmer)}</b>　县：{e(view.county)}</p>'
        f'<div class="card" id="transcript">{lines}</div><div class="card">{delete}'
        "<p class=muted>删除消息文字、实体、照片语音文件、求助单的电话、乡镇、症状和对话；"
        "保留匿名的条数和时间，考核数字不变。</p></div>"
    )
    return _frame(login, f"咨询记录 #{view.id}", body)


async def delete_farmer(request: web.Request) -> web.StreamResponse:
    """POST /admin/farmers/{conv_id}/delete: the farmer of this record, all their data."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    if form.get("confirm", "").strip() != CONFIRM:
        raise web.HTTPBadRequest(text=f"请输入「{CONFIRM}」确认")
    conv_id = int(request.match_info["conv_id"])
    folder = media_dir(request)

    def work(session: Session) -> farmer_data.Deleted | None:
        if farmer_data.view_conversation(session, conv_id, login.actor) is None:
            return None  # not theirs to see, so not theirs to delete
        openid = farmer_data.openid_of(session, conv_id)
        if openid is None or openid.startswith("deleted-"):
            return None
        farmer_data.wipe_rasa_tracker(openid)
        return farmer_data.delete_farmer(session, openid, folder, login.actor)

    done = await run_db(request, work)
    if done is None:
        raise web.HTTPNotFound(text="没有这条记录，或已删除")
    raise web.HTTPSeeOther(
        f"/admin/farmers?notice=已删除：{done.messages} 条消息，{done.cases} 个求助单，"
        f"{done.media_files} 个文件"
    )
