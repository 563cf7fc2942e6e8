"""GET /admin/: the service dashboard of a month; GET /admin/report.xlsx: its Excel report."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from aiohttp import web
from sqlalchemy.orm import Session

from bot.admin import charts, figures, pages
from bot.admin.access import scope_of
from bot.admin.figures import COLUMNS, Row
from bot.admin.report import report_bytes
from bot.admin.report_query import CST, MonthData, ReportError, load_month, month_bounds
from bot.console.auth import Login
from bot.console.deps import run_db
from bot.console.views import CATEGORY_LABELS

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def month_of(request: web.Request) -> str:
    """The ?month= asked for (YYYY-MM), this month (Beijing time) by default; 400 if malformed."""
    month = request.query.get("month") or datetime.now(CST).strftime("%Y-%m")
    try:
        month_bounds(month)
    except ReportError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return month


def _kpis(total: Row) -> str:
    items = [
        ("咨询", total.consultations),
        ("机器人解答", total.bot_answered),
        ("转人工", total.handed_off),
        ("已结案", total.closed),
        ("上门", total.visits),
        ("未回复", total.unanswered),
        (
            "满意度",
            f"{total.rating_mean}（{total.rating_count} 人）" if total.rating_count else "—",
        ),
    ]
    return (
        '<div class="grid" id="kpis">'
        + "".join(f'<div class="kpi"><b>{pages.e(v)}</b>{pages.e(k)}</div>' for k, v in items)
        + "</div>"
    )


def _table(tid: str, rows: list[Row]) -> str:
    head = "".join(f"<th>{pages.e(label)}</th>" for _, label in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{pages.e('' if v is None else v)}</td>"
            for v in (asdict(r)[name] for name, _ in COLUMNS)
        )
        + "</tr>"
        for r in rows
    )
    return f'<div style="overflow-x:auto"><table id="{tid}"><tr>{head}</tr>{body}</table></div>'


def render(data: MonthData) -> str:
    """The dashboard's content for one month's records."""
    consults, cases = data.consultations, data.cases
    counties = figures.county_rows(consults, cases)
    people = figures.commissioner_rows(cases, data.roster)
    first = [m for c in cases if (m := figures.minutes(c.created_at, c.first_reply_at)) is not None]
    close = [m for c in cases if (m := figures.minutes(c.created_at, c.closed_at)) is not None]
    ratings = [(f"{n} 分", float(sum(c.rating == n for c in cases))) for n in range(5, 0, -1)]
    total = counties[-1]

    def cat(c: figures.ConsultationRec) -> str | None:
        return CATEGORY_LABELS.get(c.category or "", c.category)

    def pairs(items: list[tuple[str, int]]) -> list[tuple[str, float]]:
        return [(k, float(v)) for k, v in items]

    grid = "".join(
        [
            charts.bars("per-day", "每日咨询量", pairs(figures.per_day(consults, CST))),
            charts.bars("by-crop", "按作物", pairs(figures.counts_by(consults, lambda c: c.crop))),
            charts.bars("by-category", "按问题类别", pairs(figures.counts_by(consults, cat))),
            charts.bars(
                "by-county", "按县", pairs(figures.counts_by(consults, lambda c: c.county))
            ),
            charts.bars(
                "bot-vs-human",
                "机器人解答 / 转人工",
                [
                    ("机器人解答", float(total.bot_answered or 0)),
                    ("转人工", float(total.handed_off or 0)),
                ],
            ),
            charts.bars("first-reply", "专家首次回复用时", charts.bucket(first)),
            charts.bars("time-to-close", "结案用时", charts.bucket(close)),
            charts.bars("satisfaction", "农户评分", ratings),
            charts.bars(
                "per-commissioner", "各专家接单数", [(r.key, float(r.assigned)) for r in people]
            ),
        ]
    )
    download = (
        f'<form method="get" action="/admin/report.xlsx"><input type="hidden" name="month" '
        f'value="{pages.e(data.month)}"><button id="download">下载 {pages.e(data.month)} 月报'
        "（Excel）</button></form>"
    )
    picker = (
        '<form method="get" action="/admin/"><label>月份 <input type="month" name="month" '
        f'id="month" value="{pages.e(data.month)}"></label> <button id="show">查看</button></form>'
    )
    return (
        f'{picker}{download}{_kpis(total)}<div class="grid">{grid}</div>'
        f"<h2>按专家</h2>{_table('commissioners', people)}"
        f"<h2>按县</h2>{_table('counties', counties)}"
    )


async def dashboard(request: web.Request) -> web.StreamResponse:
    """GET /admin/?month=YYYY-MM."""
    login: Login = request["login"]
    month, county = month_of(request), scope_of(login)

    def work(session: Session) -> MonthData:
        return load_month(month, session=session, county=county)

    data = await run_db(request, work)
    body = pages.layout(
        f"服务统计 · {month}",
        render(data),
        user=login.username,
        csrf=login.csrf,
        scope=county or "全省",
    )
    return pages.html(body)


async def report_download(request: web.Request) -> web.StreamResponse:
    """GET /admin/report.xlsx?month=YYYY-MM: the monthly report of the admin's scope."""
    login: Login = request["login"]
    month, county = month_of(request), scope_of(login)
    body = await run_db(request, lambda s: report_bytes(month, session=s, county=county))
    name = f"ketepai-report-{month}{'-' + county if county else ''}.xlsx"
    return web.Response(
        body=body,
        content_type=XLSX,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}"},
    )


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name)
