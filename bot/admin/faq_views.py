"""/admin/faq: add an FAQ (question variants + answer card); list the FAQs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import kb_faq
from bot.admin import pages
from bot.admin.nlu_inbox import LabelError
from bot.admin_models import FaqEntry
from bot.console.auth import Login, check_csrf
from bot.console.deps import run_db
from bot.handoff import event
from bot.knowledge import load_names

e = pages.e
FAQ_PATH: web.AppKey[Path] = web.AppKey("faq_path", Path)


def _path(request: web.Request) -> Path:
    return request.config_dict.get(FAQ_PATH, kb_faq.FAQ_FILE)


async def faq_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/faq."""
    login: Login = request["login"]

    def work(session: Session) -> list[FaqEntry]:
        rows = session.execute(select(FaqEntry).order_by(FaqEntry.id.desc()).limit(200))
        return list(rows.scalars())

    rows = await run_db(request, work)
    table = "".join(
        f'<tr><td>{r.id}</td><td><a href="/admin/kb/{e(r.card_id)}">{e(r.card_id)}</a></td>'
        f"<td>{e(r.intent)}</td><td>{'<br>'.join(e(v) for v in r.variants)}</td>"
        f"<td>{e(r.created_by)}</td></tr>"
        for r in rows
    )
    intents = "".join(f'<option value="{i}">{i}</option>' for i in kb_faq.CONSULT_INTENTS)
    add = pages.form(
        "/admin/faq",
        login.csrf,
        '<label>答案卡片编号 <input type="text" name="card_id" id="faq-card"></label>'
        f'<label>意图 <select name="intent" id="faq-intent">{intents}</select></label>'
        '<textarea name="variants" id="faq-variants" rows="5" placeholder="一行一个问法">'
        "</textarea>",
        "添加常见问题",
        "add-faq",
    )
    notice = request.query.get("notice", "")
    body = (
        (f'<p class="ok" id="notice">{e(notice)}</p>' if notice else "")
        + "<p class=muted>农户的话和某个问法几乎一样时，直接用这张卡片回答。问法也写进训练数据"
        "（nlu_data/nlu/faq.yml），在「模型」页重新训练后生效得更稳。</p>"
        + add
        + '<h2>已有的常见问题</h2><table id="faqs"><tr><th>#</th><th>卡片</th><th>意图</th>'
        f"<th>问法</th><th>添加人</th></tr>{table}</table>"
    )
    scope = login.actor.county or "全省"
    return pages.html(
        pages.layout("常见问题", body, user=login.username, csrf=login.csrf, scope=scope)
    )


async def add_faq(request: web.Request) -> web.StreamResponse:
    """POST /admin/faq: card_id, intent, variants (one a line); stored, faq.yml rewritten."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    variants = form.get("variants", "").splitlines()
    names = await asyncio.to_thread(load_names)
    path = _path(request)

    def work(session: Session) -> tuple[int, int]:
        row = kb_faq.add_faq(
            session,
            card_id=form.get("card_id", "").strip(),
            intent=form.get("intent", ""),
            variants=variants,
            actor=login.actor.label,
        )
        kb_faq.write_file(kb_faq.render_file(session, names), path)
        event(session, None, login.actor, "faq_added", f"#{row.id} {row.card_id}")
        return row.id, len(row.variants)

    try:
        faq_id, n = await run_db(request, work)
    except (kb_faq.FaqError, LabelError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    notice = quote(f"已添加常见问题 #{faq_id}（{n} 个问法）")
    raise web.HTTPSeeOther(f"/admin/faq?notice={notice}")
