"""/admin/nlu: the NLU inbox (label with one click) and adding examples to an intent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from sqlalchemy.orm import Session

from bot.admin import nlu_inbox, pages
from bot.admin.nlu_inbox import InboxItem, LabelError
from bot.console.auth import Login, check_csrf
from bot.console.deps import run_db
from bot.handoff import event
from bot.knowledge import load_names

e = pages.e
INBOX_PATH: web.AppKey[Path] = web.AppKey("nlu_inbox_path", Path)


def _path(request: web.Request) -> Path:
    return request.config_dict.get(INBOX_PATH, nlu_inbox.INBOX_FILE)


def _options(intents: set[str], chosen: str | None) -> str:
    return "".join(
        f'<option value="{e(i)}"{" selected" if i == chosen else ""}>{e(i)}</option>'
        for i in sorted(intents)
    )


def _render(items: list[InboxItem], intents: set[str], csrf: str, notice: str) -> str:
    rows = "".join(
        f"<tr><td>{e(it.text)}</td><td>{e(it.intent or '—')}</td>"
        f"<td>{'' if it.confidence is None else f'{it.confidence:.2f}'}</td>"
        f"<td>{'转人工' if it.handed_off else ''}</td><td>"
        + pages.form(
            "/admin/nlu/label",
            csrf,
            f'<input type="hidden" name="text" value="{e(it.text)}">'
            f'<select name="intent" id="intent-{it.id}">{_options(intents, it.intent)}</select>',
            "加入训练数据",
            f"label-{it.id}",
        )
        + "</td></tr>"
        for it in items
    )
    add = pages.form(
        "/admin/nlu/label",
        csrf,
        f'<select name="intent" id="add-intent">{_options(intents, None)}</select>'
        '<textarea name="text" id="add-texts" rows="4" placeholder="一行一个问法"></textarea>',
        "添加样例",
        "add-examples",
    )
    return (
        (f'<p class="ok" id="notice">{e(notice)}</p>' if notice else "")
        + f"<h2>给意图添加问法</h2>{add}<h2>待标注消息</h2>"
        + "<p class=muted>模型把握不大（置信度低于 0.6）或最后转了人工的农户消息。</p>"
        + f'<table id="inbox"><tr><th>消息</th><th>模型判断</th><th>置信度</th><th></th>'
        f"<th></th></tr>{rows}</table>"
    )


async def inbox_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/nlu."""
    login: Login = request["login"]
    path = _path(request)
    labelled = await asyncio.to_thread(nlu_inbox.labelled_texts, path)

    def work(session: Session) -> list[InboxItem]:
        return nlu_inbox.inbox(session=session, labelled=labelled)

    items = await run_db(request, work)
    body = _render(items, nlu_inbox.known_intents(), login.csrf, request.query.get("notice", ""))
    return pages.html(
        pages.layout(
            "训练数据",
            body,
            user=login.username,
            csrf=login.csrf,
            scope=login.actor.county or "全省",
        )
    )


async def label(request: web.Request) -> web.StreamResponse:
    """POST /admin/nlu/label: text (one or more lines) and intent, into the inbox file."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    texts = [t for t in form.get("text", "").splitlines() if t.strip()]
    intent = form.get("intent", "")
    path = _path(request)
    try:
        added = await asyncio.to_thread(
            nlu_inbox.add_examples,
            intent,
            texts,
            nlu_inbox.known_intents(),
            load_names(),
            path,
        )
    except LabelError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    await run_db(request, lambda s: event(s, None, login.actor, "nlu_label", f"{intent} +{added}"))
    raise web.HTTPSeeOther(f"/admin/nlu?notice=已加入 {added} 条到 {intent}")
