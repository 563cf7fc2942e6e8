"""The admin pages' frame: the console's style, escaping and forms, with the admin's menu."""

from __future__ import annotations

from bot.console.pages import STYLE, e, form, html

__all__ = ["e", "form", "html", "layout"]

NAV = (
    ("/admin/", "服务统计"),
    ("/admin/kb", "知识库"),
    ("/admin/nlu", "训练数据"),
    ("/admin/faq", "常见问题"),
    ("/admin/model", "模型"),
    ("/admin/farmers", "农户记录"),
    ("/console/", "求助单"),
)
ADMIN_STYLE = """
nav a{margin-right:1em} .chart{background:#fff;padding:.6em;margin:.8em 0;border-radius:6px}
figcaption{font-weight:bold;margin-bottom:.3em} .grid{display:flex;flex-wrap:wrap;gap:1em}
.kpi{background:#fff;padding:.6em 1em;border-radius:6px;min-width:8em}
.kpi b{display:block;font-size:1.6em} .ok{color:#1b5e20}
.chart{max-width:100%;box-sizing:border-box} .chart svg{max-width:100%;height:auto}
"""


def layout(title: str, content: str, *, user: str, csrf: str, scope: str) -> str:
    """An admin page: menu, the viewer, their scope (a county or 全省) and logout."""
    nav = "".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in NAV)
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · 科特派助手</title><style>{STYLE}{ADMIN_STYLE}</style></head><body>"
        f'<header><a href="/admin/"><b>科特派助手 · 管理</b></a><nav>{nav}</nav>'
        f'<span id="scope">{e(scope)}</span><span>{e(user)}</span>'
        f'<form method="post" action="/console/logout"><input type="hidden" name="csrf" '
        f'value="{e(csrf)}"><button id="logout">退出</button></form></header>'
        f"<main><h1>{e(title)}</h1>{content}</main></body></html>"
    )
