"""/admin/nlu: the NLU inbox (label with one click) and adding examples to an intent.

A label that cannot be saved shows the page again with the reason in Chinese and the admin's
input (text, intent, crop) kept, never a bare error page.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from bot.admin import nlu_inbox, pages
from bot.admin.nlu_inbox import AUTO, NO_CROP, InboxItem, LabelError, intent_label
from bot.console.auth import Login, check_csrf
from bot.console.deps import run_db
from bot.handoff import event
from bot.knowledge import Names, load_names

e = pages.e
TO_MODEL = '<a href="/admin/model" id="to-model">去「模型」页重新训练</a>'
INBOX_PATH: web.AppKey[Path] = web.AppKey("nlu_inbox_path", Path)
CONSULT_FIRST = tuple(nlu_inbox.INTENT_LABELS)  # consultation intents first, then the others


def _path(request: web.Request) -> Path:
    return request.config_dict.get(INBOX_PATH, nlu_inbox.INBOX_FILE)


def _intent_options(intents: set[str], chosen: str | None) -> str:
    order = [i for i in CONSULT_FIRST if i in intents] + sorted(intents - set(CONSULT_FIRST))
    blank = "" if chosen in intents else '<option value="" selected>（请选择）</option>'
    return blank + "".join(
        f'<option value="{e(i)}"{" selected" if i == chosen else ""}>{e(intent_label(i))}</option>'
        for i in order
    )


def _crop_options(names: Names, chosen: str) -> str:
    first = (
        (AUTO, "自动（按消息里的作物名）"),
        (NO_CROP, "消息里没有作物"),
    )
    return "".join(
        f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(label)}</option>'
        for v, label in (*first, *((c, c) for c in sorted(names.crops)))
    )


def _row(it: InboxItem, intents: set[str], names: Names, csrf: str, kept: dict[str, str]) -> str:
    mine = kept.get("msg") == str(it.id)  # the row whose label was refused: keep its choices
    crop = kept.get("crop", AUTO) if mine else (names.find_crop(it.text) or NO_CROP)
    intent = kept.get("intent") if mine else it.intent
    conf = "" if it.confidence is None else f"{it.confidence:.2f}"
    return (
        f'<tr id="msg-{it.id}"><td class="text">{e(it.text)}</td>'
        f"<td>{e(intent_label(it.intent))}</td><td>{conf}</td>"
        f"<td>{'转人工' if it.handed_off else ''}</td><td>"
        + pages.form(
            "/admin/nlu/label",
            csrf,
            f'<input type="hidden" name="text" value="{e(it.text)}">'
            f'<input type="hidden" name="msg" value="{it.id}">'
            f'<label>意图 <select name="intent" id="intent-{it.id}">'
            f"{_intent_options(intents, intent)}</select></label>"
            f'<label>作物 <select name="crop" id="crop-{it.id}">'
            f"{_crop_options(names, crop)}</select></label>",
            "加入训练数据",
            f"label-{it.id}",
        )
        + "</td></tr>"
    )


def _render(
    items: list[InboxItem],
    intents: set[str],
    names: Names,
    csrf: str,
    notice: str,
    *,
    error: str = "",
    kept: dict[str, str] | None = None,
) -> str:
    kept = kept or {}
    rows = "".join(_row(it, intents, names, csrf, kept) for it in items)
    add_kept = {} if kept.get("msg") else kept
    add = pages.form(
        "/admin/nlu/label",
        csrf,
        f'<label>意图 <select name="intent" id="add-intent">'
        f"{_intent_options(intents, add_kept.get('intent'))}</select></label>"
        f'<label>作物 <select name="crop" id="add-crop">'
        f"{_crop_options(names, add_kept.get('crop', AUTO))}</select></label>"
        '<textarea name="text" id="add-texts" rows="4" placeholder="一行一个问法">'
        f"{e(add_kept.get('text', ''))}</textarea>",
        "添加样例",
        "add-examples",
    )
    empty = "" if items else '<p id="inbox-empty">没有待标注的消息。</p>'
    return (
        (f'<p class="err" id="error" role="alert">{e(error)}</p>' if error else "")
        + (f'<p class="ok" id="notice">{e(notice)} {TO_MODEL}</p>' if notice else "")
        + f"<h2>给意图添加问法</h2>{add}<h2>待标注消息</h2>"
        + "<p class=muted>模型把握不大（置信度低于 0.6）或最后转了人工的农户消息。选好意图和"
        "作物，点「加入训练数据」：写进 nlu_data/nlu/inbox.yml，在「模型」页重新训练后生效。</p>"
        + f'<table id="inbox"><tr><th>消息</th><th>模型判断</th><th>置信度</th><th></th>'
        f"<th>标注</th></tr>{rows}</table>{empty}"
    )


async def _page(
    request: web.Request, login: Login, *, error: str = "", kept: dict[str, str] | None = None
) -> web.Response:
    path = _path(request)
    labelled = await asyncio.to_thread(nlu_inbox.labelled_texts, path)

    def work(session: Session) -> list[InboxItem]:
        return nlu_inbox.inbox(session=session, labelled=labelled)

    items = await run_db(request, work)
    names = await asyncio.to_thread(load_names)
    notice = "" if error else request.query.get("notice", "")
    body = _render(
        items, nlu_inbox.known_intents(), names, login.csrf, notice, error=error, kept=kept
    )
    page = pages.layout(
        "训练数据", body, user=login.username, csrf=login.csrf, scope=login.actor.county or "全省"
    )
    return pages.html(page, status=422 if error else 200)


async def inbox_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/nlu."""
    return await _page(request, request["login"])


async def label(request: web.Request) -> web.StreamResponse:
    """POST /admin/nlu/label: text (one or more lines), intent and crop, into the inbox file."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    raw = form.get("text", "")
    texts = [t for t in raw.splitlines() if t.strip()]
    intent = form.get("intent", "")
    crop = form.get("crop", AUTO)
    path = _path(request)
    try:
        added = await asyncio.to_thread(
            nlu_inbox.add_examples,
            intent,
            texts,
            nlu_inbox.known_intents(),
            load_names(),
            path,
            crop,
        )
    except LabelError as exc:
        # The add form gets back what was typed; an inbox row keeps its choices.
        kept = {"text": raw, "intent": intent, "crop": crop, "msg": form.get("msg", "")}
        return await _page(request, login, error=f"没有保存：{exc}", kept=kept)
    await run_db(request, lambda s: event(s, None, login.actor, "nlu_label", f"{intent} +{added}"))
    if added:
        notice = f"已加入 {added} 条到「{intent_label(intent)}」"
    else:
        notice = "这条问法已经在训练数据里了，没有重复添加"
    raise web.HTTPSeeOther(f"/admin/nlu?notice={quote(notice)}")
