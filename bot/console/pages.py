"""The console's HTML, as plain strings: every value escaped, every form with its CSRF token."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from aiohttp import web

from bot.case_core import is_held

STYLE = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;background:#f4f6f4}
header{background:#2e7d32;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center}
header a{color:#fff} main{max-width:60em;margin:1em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left}
#events td{overflow-wrap:anywhere}
.card{background:#fff;padding:1em;margin:.8em 0;border-radius:6px;overflow-x:auto}
.in{color:#1b5e20}.out{color:#0d47a1}.err{color:#b71c1c}.muted{color:#777}
textarea,input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.4em}
button{padding:.4em 1em;margin:.3em 0}
img.photo{max-width:14em;margin:.3em;border:1px solid #ccc}
@media (max-width:600px){main{padding:0 .5em}td,th{padding:.3em .2em}header{flex-wrap:wrap}
button{white-space:nowrap}}
"""


def html(body: str, status: int = 200) -> web.Response:
    """An HTML response."""
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def e(value: Any) -> str:
    """Escape anything for HTML text and attributes."""
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, content: str, *, user: str = "", csrf: str = "") -> str:
    """The page frame, with the user and a logout button when signed in."""
    who = ""
    if user:
        who = (
            f'<span>{e(user)}</span><form method="post" action="/console/logout">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button id="logout">退出</button></form>'
        )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · 科特派助手</title><style>{STYLE}</style></head><body>"
        f'<header><a href="/console/"><b>科特派助手 · 专家工作台</b></a>{who}</header>'
        f"<main><h1>{e(title)}</h1>{content}</main></body></html>"
    )


def form(action: str, csrf: str, inner: str, button: str, bid: str) -> str:
    """A POST form with its CSRF token."""
    return (
        f'<form method="post" action="{e(action)}"><input type="hidden" name="csrf" '
        f'value="{e(csrf)}">{inner}<button id="{e(bid)}">{e(button)}</button></form>'
    )


def login_page(csrf: str, error: str = "") -> str:
    """The login form."""
    inner = (
        '<label>用户名 <input type="text" name="username" id="username" autocomplete="username">'
        '</label><label>密码 <input type="password" name="password" id="password" '
        'autocomplete="current-password"></label>'
    )
    err = f'<p class="err">{e(error)}</p>' if error else ""
    return layout("登录", err + form("/console/login", csrf, inner, "登录", "login"))


@dataclass(frozen=True)
class Row:
    """One case in a list."""

    id: int
    status: str
    crop: str
    county: str
    symptoms: str
    waited: str
    claimable: bool


@dataclass(frozen=True)
class CaseView:
    """Everything the case page shows, read inside the transaction."""

    id: int
    status: str
    facts: list[tuple[str, str]]
    transcript: list[dict[str, Any]]
    photos: list[str]  # URLs
    events: list[tuple[str, str, str, str]]  # at, actor, action, detail
    window: str
    claimable: bool
    can_act: bool
    next_steps: list[str] = field(default_factory=list)  # reply, visit, visited, close, reopen


def _table(rows: list[Row], csrf: str, tid: str) -> str:
    if not rows:
        return '<p class="muted">没有</p>'
    body = "".join(
        f'<tr><td><a href="/console/cases/{r.id}">#{r.id}</a></td><td>{e(r.status)}</td>'
        f"<td>{e(r.crop)}</td><td>{e(r.county)}</td><td>{e(r.symptoms)}</td>"
        f"<td>{e(r.waited)}</td><td>"
        + (
            form(f"/console/cases/{r.id}/claim", csrf, "", "接单", f"claim-{r.id}")
            if r.claimable
            else ""
        )
        + "</td></tr>"
        for r in rows
    )
    return (
        f'<table id="{tid}"><tr><th>单号</th><th>状态</th><th>作物</th><th>县</th><th>症状</th>'
        f"<th>已等</th><th></th></tr>{body}</table>"
    )


def queue_page(user: str, csrf: str, waiting: list[Row], mine: list[Row], title: str) -> str:
    """The queue: cases waiting for someone, and the viewer's own."""
    content = (
        f"<h2>待接单</h2>{_table(waiting, csrf, 'waiting')}"
        f"<h2>{e(title)}</h2>{_table(mine, csrf, 'mine')}"
    )
    return layout("求助单", content, user=user, csrf=csrf)


REFUSAL_LABELS = {
    "window_closed": "农户的 48 小时窗口已关闭",
    "quota_used": "推送次数已用完",
    "failed": "推送失败",
}


def _delivery_note(t: dict[str, Any]) -> str:
    """How an outgoing message fared: waiting for the farmer, or delivered after waiting."""
    delivery = t.get("delivery")
    if t.get("dir") != "out" or delivery in (None, "queued"):
        return ""
    if delivery == "passive" and t.get("held"):
        return ' <span class="muted held-done">（农户来消息后已送达）</span>'
    if not is_held(t):
        return ""
    why = REFUSAL_LABELS.get(str(delivery), str(delivery))
    told = "，已发模板消息通知农户" if t.get("notified") == "template" else ""
    return f' <span class="err held">（等待农户发消息后送达：{e(why)}{told}）</span>'


def case_page(user: str, csrf: str, v: CaseView) -> str:
    """One case: facts, transcript, photos, the WeChat window, actions and history."""
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(val)}</td></tr>" for k, val in v.facts)
    lines = "".join(
        f'<p class="{"in" if t.get("dir") == "in" else "out"}"><span class="muted">'
        f"{e(str(t.get('at', ''))[:16])} {e(t.get('who', ''))}</span><br>{e(t.get('text'))}"
        + _delivery_note(t)
        + "</p>"
        for t in v.transcript
    )
    photos = "".join(f'<img class="photo" src="{e(u)}" alt="照片">' for u in v.photos)
    held = sum(1 for t in v.transcript if is_held(t))
    waiting = (
        f'<p id="held" class="err">有 {held} 条回复在等农户：农户下次发消息时自动送达。</p>'
        if held
        else ""
    )
    acts = ""
    base = f"/console/cases/{v.id}"
    if v.claimable:
        acts += form(f"{base}/claim", csrf, "", "接单", "claim")
    if "reply" in v.next_steps:
        acts += form(
            f"{base}/reply",
            csrf,
            '<textarea name="text" id="reply-text" rows="4"></textarea>',
            "回复农户",
            "reply",
        )
    if "visit" in v.next_steps:
        acts += form(
            f"{base}/visit",
            csrf,
            '<input type="text" name="when" id="visit-when" placeholder="上门时间，如：明天上午">',
            "约上门",
            "visit",
        )
    if "visited" in v.next_steps:
        acts += form(f"{base}/visited", csrf, "", "已上门", "visited")
    if "close" in v.next_steps:
        acts += form(
            f"{base}/close",
            csrf,
            '<textarea name="resolution" id="resolution" '
            'rows="2" placeholder="处理结果"></textarea>',
            "结案",
            "close",
        )
    if "reopen" in v.next_steps:
        acts += form(f"{base}/reopen", csrf, "", "重新打开", "reopen")
    history = "".join(
        f"<tr><td>{e(at)}</td><td>{e(who)}</td><td>{e(what)}</td><td>{e(detail)}</td></tr>"
        for at, who, what, detail in v.events
    )
    content = (
        f'<div class="card"><p id="status">状态：<b>{e(v.status)}</b></p>'
        f'<p id="window">{e(v.window)}</p>{waiting}<table id="facts">{facts}</table></div>'
        f'<div class="card"><h2>对话</h2><div id="transcript">{lines}</div>{photos}</div>'
        f'<div class="card" id="actions">{acts or "<p class=muted>无可用操作</p>"}</div>'
        f'<div class="card"><h2>记录</h2><table id="events">{history}</table></div>'
    )
    return layout(f"求助单 #{v.id}", content, user=user, csrf=csrf)


def message_page(title: str, text: str, status: int, user: str = "", csrf: str = "") -> str:
    """A refusal or an error, said plainly."""
    return layout(
        title,
        f'<p class="err" id="message">{e(text)}</p><p><a href="/console/">返回</a></p>',
        user=user,
        csrf=csrf,
    )
