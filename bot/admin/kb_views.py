"""/admin/kb: search, view, edit, publish (safety-checked) and retire cards; Excel in and out."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.orm import Session

from bot.admin import kb_service, pages
from bot.admin.kb_service import KbEditError
from bot.console.auth import Login, check_csrf
from bot.console.deps import run_db
from bot.handoff import event
from bot.kb_models import KbCard
from bot.kb_store import card_of
from bot.knowledge import CONTROL_ORDER

e = pages.e
STATUS = {"draft": "草稿", "published": "已发布", "retired": "已停用"}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _page(login: Login, title: str, content: str) -> web.Response:
    scope = login.actor.county or "全省"
    return pages.html(
        pages.layout(title, content, user=login.username, csrf=login.csrf, scope=scope)
    )


def _list(rows: list[KbCard], q: str, csrf: str, notice: str) -> str:
    body = "".join(
        f'<tr><td><a href="/admin/kb/{e(r.id)}">{e(r.id)}</a></td><td>{e("、".join(r.crops))}</td>'
        f"<td>{e(r.topic)}</td><td>{e(STATUS.get(r.status, r.status))}</td>"
        f"<td>{r.helpful}</td><td>{r.not_helpful}</td>"
        f'<td class="err">{e("；".join(r.flags or []))[:80]}</td></tr>'
        for r in rows
    )
    importer = (
        '<form method="post" action="/admin/kb/import" enctype="multipart/form-data">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<input type="file" name="file" id="kb-file" accept=".xlsx">'
        '<button id="kb-import">导入 Excel（导入为草稿）</button></form>'
    )
    return (
        (f'<p class="ok" id="notice">{e(notice)}</p>' if notice else "")
        + '<form method="get" action="/admin/kb"><input type="text" name="q" id="kb-q" '
        f'value="{e(q)}" placeholder="作物、病虫害、卡片号"><button id="kb-search">搜索</button>'
        '</form><p><a id="kb-export" href="/admin/kb/export.xlsx">导出全部卡片（Excel）</a></p>'
        f"{importer}<p class=muted>「没解决」多于「有用」的卡片排在最前。</p>"
        '<table id="cards"><tr><th>卡片</th><th>作物</th><th>问题</th><th>状态</th><th>有用</th>'
        f"<th>没解决</th><th>待处理</th></tr>{body}</table>"
    )


async def kb_list(request: web.Request) -> web.StreamResponse:
    """GET /admin/kb?q=: cards, the most often 「没解决」 first."""
    login: Login = request["login"]
    q = request.query.get("q", "")
    rows = await run_db(request, lambda s: kb_service.search(q, session=s))
    return _page(login, "知识库", _list(rows, q, login.csrf, request.query.get("notice", "")))


def _card_page(row: KbCard, csrf: str, problems: list[str]) -> str:
    c = card_of(row)
    base = f"/admin/kb/{c.id}"
    fields = "".join(
        f'<label>{e(label)}<textarea name="{name}" id="f-{name}" rows="{rows}">'
        f"{e(value)}</textarea></label>"
        for name, label, value, rows in [
            ("topic", "问题名称", c.topic, 1),
            ("aliases", "别名（用、分隔）", "、".join(c.aliases), 1),
            ("summary", "摘要", c.summary, 3),
            ("symptoms", "症状", c.symptoms, 3),
            ("cause", "原因", c.cause, 2),
            *(
                (
                    f"control.{k}",
                    f"防治·{kb_service.control_label(k)}（一行一条）",
                    "\n".join(c.control.get(k, ())),
                    3,
                )
                for k in CONTROL_ORDER
            ),
            ("season", "季节", c.season, 1),
            ("region", "地区", c.region, 1),
            ("source", "来源", c.source, 1),
        ]
    )
    refused = "".join(f"<li>{e(p)}</li>" for p in problems)
    return (
        (
            f'<div class="card err" id="refused"><b>不能发布：</b><ul>{refused}</ul></div>'
            if refused
            else ""
        )
        + f'<div class="card"><p id="card-status">状态：<b>{e(STATUS.get(c.status, c.status))}</b>'
        f" · 作物 {e(c.crop)} · 类别 {e(c.category)} · 来源 {e(c.origin)}"
        f" · 审核 {e(c.reviewer or '—')} {e(c.reviewed)} · 有用 {row.helpful} / 没解决 "
        f'{row.not_helpful}</p><p class="err">{e("；".join(c.flags))}</p>'
        + pages.form(f"{base}/publish", csrf, "", "审核通过并发布", "publish")
        + pages.form(f"{base}/retire", csrf, "", "停用", "retire")
        + "</div>"
        + pages.form(f"{base}/edit", csrf, fields, "保存（改后需重新发布）", "save")
    )


async def kb_card(request: web.Request) -> web.StreamResponse:
    """GET /admin/kb/{id}."""
    login: Login = request["login"]
    card_id = request.match_info["card_id"]
    try:
        row = await run_db(request, lambda s: kb_service.get(card_id, session=s))
    except KbEditError:
        raise web.HTTPNotFound(text=f"没有卡片 {card_id}") from None
    return _page(login, f"卡片 {card_id}", _card_page(row, login.csrf, []))


async def kb_action(request: web.Request) -> web.StreamResponse:
    """POST /admin/kb/{id}/{edit|publish|retire} (audited)."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    card_id, action = request.match_info["card_id"], request.match_info["action"]
    if action not in ("edit", "publish", "retire"):
        raise web.HTTPNotFound()

    def work(session: Session) -> tuple[list[str], KbCard]:
        problems: list[str] = []
        if action == "edit":
            kb_service.edit(card_id, form, session=session)
        elif action == "publish":
            problems = kb_service.publish(card_id, login.username, session=session)
        else:
            kb_service.retire(card_id, session=session)
        detail = card_id + (" refused: unsafe" if problems else "")
        event(session, None, login.actor, f"kb_{action}", detail)
        return problems, kb_service.get(card_id, session=session)

    try:
        problems, row = await run_db(request, work)
    except KbEditError as exc:
        return pages.html(
            pages.layout(
                "不能保存",
                f'<p class="err" id="message">{e(exc)}</p>',
                user=login.username,
                csrf=login.csrf,
                scope=login.actor.county or "全省",
            ),
            400,
        )
    if problems:
        return pages.html(
            pages.layout(
                f"卡片 {card_id}",
                _card_page(row, login.csrf, problems),
                user=login.username,
                csrf=login.csrf,
                scope=login.actor.county or "全省",
            ),
            422,
        )
    raise web.HTTPSeeOther(f"/admin/kb/{card_id}")


async def kb_export(request: web.Request) -> web.StreamResponse:
    """GET /admin/kb/export.xlsx."""
    body = await run_db(request, lambda s: kb_service.export_xlsx(session=s))
    return web.Response(
        body=body,
        content_type=XLSX,
        headers={"Content-Disposition": 'attachment; filename="ketepai-kb.xlsx"'},
    )


async def kb_import(request: web.Request) -> web.StreamResponse:
    """POST /admin/kb/import: an .xlsx in the export's columns; cards arrive as drafts."""
    login: Login = request["login"]
    await check_csrf(request, login.csrf)
    upload = (await request.post()).get("file")
    if not isinstance(upload, web.FileField):
        raise web.HTTPBadRequest(text="请选择一个 Excel 文件")
    data = upload.file.read()

    def work(session: Session) -> str:
        counts = kb_service.import_xlsx(data, session=session)
        text = f"新增 {counts.inserted}，更新 {counts.updated}，未变 {counts.unchanged}"
        event(session, None, login.actor, "kb_import", text)
        return text

    try:
        notice = await run_db(request, work)
    except KbEditError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    raise web.HTTPSeeOther(f"/admin/kb?notice={notice}")
