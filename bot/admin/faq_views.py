"""/admin/faq: add an FAQ (a question, its other wordings and the answer card); list the FAQs.

An FAQ that cannot be added shows the page again with the reason in Chinese and everything the
admin typed kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import kb_faq
from bot.admin import pages
from bot.admin.nlu_inbox import LabelError, intent_label
from bot.admin_models import FaqEntry
from bot.console.auth import Login, check_csrf
from bot.console.deps import run_db
from bot.handoff import event
from bot.kb_models import KbCard
from bot.knowledge import load_names

e = pages.e
TO_MODEL = '<a href="/admin/model" id="to-model">去「模型」页重新训练</a>'
FAQ_PATH: web.AppKey[Path] = web.AppKey("faq_path", Path)
FIELDS = ("question", "variants", "card_id", "intent")


def _path(request: web.Request) -> Path:
    return request.config_dict.get(FAQ_PATH, kb_faq.FAQ_FILE)


def _titles(session: Session) -> dict[str, str]:
    """Published cards: id → 「猕猴桃 · 溃疡病」."""
    rows = session.execute(
        select(KbCard.id, KbCard.crops, KbCard.topic)
        .where(KbCard.status == "published")
        .order_by(KbCard.id)
    )
    return {i: f"{'、'.join(c or [])} · {t}" for i, c, t in rows.all()}


def _form(csrf: str, titles: dict[str, str], kept: dict[str, str]) -> str:
    chosen = kept.get("intent", "")
    intents = f'<option value=""{"" if chosen else " selected"}>按答案卡片的类别</option>'
    for i in kb_faq.CONSULT_INTENTS:
        sel = " selected" if i == chosen else ""
        intents += f'<option value="{i}"{sel}>{e(intent_label(i))}</option>'
    cards = "".join(f'<option value="{e(i)}">{e(t)}</option>' for i, t in titles.items())
    card = kept.get("card_id", "")
    shown = titles.get(card, "")
    return pages.form(
        "/admin/faq",
        csrf,
        '<label>标准问题 <input type="text" name="question" id="faq-question" '
        f'placeholder="农户最常见的问法" value="{e(kept.get("question", ""))}"></label>'
        '<label>其他问法（一行一个）<textarea name="variants" id="faq-variants" rows="4" '
        f'placeholder="同一个问题的别的说法">{e(kept.get("variants", ""))}</textarea></label>'
        '<label>答案卡片（输入编号或作物、病虫名挑选）<input type="text" name="card_id" '
        f'id="faq-card" list="faq-cards" autocomplete="off" value="{e(card)}"></label>'
        f'<datalist id="faq-cards">{cards}</datalist>'
        f'<span id="faq-card-title" class="muted">{e(shown)}</span>'
        f'<label>咨询类别 <select name="intent" id="faq-intent">{intents}</select></label>',
        "添加常见问题",
        "add-faq",
    )


async def _page(
    request: web.Request, login: Login, *, error: str = "", kept: dict[str, str] | None = None
) -> web.Response:
    def work(session: Session) -> tuple[list[FaqEntry], dict[str, str]]:
        rows = session.execute(select(FaqEntry).order_by(FaqEntry.id.desc()).limit(200))
        return list(rows.scalars()), _titles(session)

    rows, titles = await run_db(request, work)
    table = "".join(
        f'<tr><td>{r.id}</td><td><a href="/admin/kb/{e(r.card_id)}">{e(r.card_id)}</a> '
        f"{e(titles.get(r.card_id, '（未发布，暂不回答）'))}</td>"
        f"<td>{e(intent_label(r.intent))}</td><td>{'<br>'.join(e(v) for v in r.variants)}</td>"
        f"<td>{e(r.created_by)}</td></tr>"
        for r in rows
    )
    notice = "" if error else request.query.get("notice", "")
    body = (
        (f'<p class="err" id="error" role="alert">{e(error)}</p>' if error else "")
        + (f'<p class="ok" id="notice">{e(notice)} {TO_MODEL}</p>' if notice else "")
        + "<p class=muted>农户的话和某个问法几乎一样时，直接用答案卡片回答。问法也写进训练数据"
        "（nlu_data/nlu/faq.yml），在「模型」页重新训练后，意思相近的说法也能认出来。</p>"
        + _form(login.csrf, titles, kept or {})
        + '<h2>已有的常见问题</h2><table id="faqs"><tr><th>#</th><th>答案卡片</th><th>类别</th>'
        f"<th>问法</th><th>添加人</th></tr>{table}</table>"
    )
    scope = login.actor.county or "全省"
    page = pages.layout("常见问题", body, user=login.username, csrf=login.csrf, scope=scope)
    return pages.html(page, status=422 if error else 200)


async def faq_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/faq."""
    return await _page(request, request["login"])


async def add_faq(request: web.Request) -> web.StreamResponse:
    """POST /admin/faq: question, variants (one a line), card_id, intent (empty: the card's
    category); stored, faq.yml rewritten."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    kept = {k: form.get(k, "") for k in FIELDS}
    variants = [kept["question"], *kept["variants"].splitlines()]
    names = await asyncio.to_thread(load_names)
    path = _path(request)

    def work(session: Session) -> tuple[int, int]:
        row = kb_faq.add_faq(
            session,
            card_id=kept["card_id"].strip(),
            intent=kept["intent"],
            variants=variants,
            actor=login.actor.label,
        )
        kb_faq.write_file(kb_faq.render_file(session, names), path)
        event(session, None, login.actor, "faq_added", f"#{row.id} {row.card_id}")
        return row.id, len(row.variants)

    try:
        faq_id, n = await run_db(request, work)
    except (kb_faq.FaqError, LabelError) as exc:
        return await _page(request, login, error=f"没有添加：{exc}", kept=kept)
    notice = quote(f"已添加常见问题 #{faq_id}（{n} 个问法）。重新训练后，意思相近的说法也能认出。")
    raise web.HTTPSeeOther(f"/admin/faq?notice={notice}")
