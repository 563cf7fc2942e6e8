"""The admin pages in headless chromium: dashboard, monthly report download, knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.handoff_models import CaseEvent
from bot.kb_models import KbCard
from bot.kb_store import record_feedback, upsert_cards
from bot.knowledge import Card
from tests.admin_helpers import seed_month
from tests.browser.cdp import DESKTOP, PHONE, Browser
from tests.browser.conftest import Gateway, add_accounts, login, shot

pytestmark = pytest.mark.browser
MONTH = "2026-11"  # seed_month's records


def _card(card_id: str, chemical: str, status: str) -> Card:
    return Card(
        id=card_id,
        crop="白菜",
        crops=("白菜",),
        category="pest",
        topic="菜青虫",
        summary="菜青虫啃食叶片，留下孔洞。",
        control={"chemical": (chemical,)},
        status=status,
        flags=("unreviewed",),
    )


def seed(session: Session) -> None:
    """November 2026's service records, the accounts, and two cabbage cards: one published that
    farmers often found unhelpful, one draft that names a banned pesticide (甲胺磷)."""
    seed_month(session)
    add_accounts(session)
    upsert_cards(
        session,
        [
            (_card("cab-ok", "用苏云金杆菌喷雾。", "published"), None),
            (_card("cab-bad", "用甲胺磷喷雾。", "draft"), None),
        ],
    )
    for _ in range(3):
        record_feedback(session, card_id="cab-ok", sender="f", helpful=False, text="没用")


def _sheet(path: Path, name: str) -> dict[str, dict[str, Any]]:
    rows = list(load_workbook(path)[name].iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    return {str(r[0]): dict(zip(header, r, strict=True)) for r in rows[1:]}


async def test_admin_dashboard_report_and_knowledge_base(
    browser: Browser, start_gateway: Any, tmp_path: Path
) -> None:
    gw: Gateway = await start_gateway(seed)
    downloads = tmp_path / "downloads"
    page = await browser.new_page(DESKTOP, mobile=False, downloads=downloads)
    assert await login(page, gw, "admin-zz") == 200

    # The dashboard of November 2026, picked with the month field.
    assert await page.goto(gw("/admin")) == 200
    assert await page.path() == "/admin/"
    await page.eval(f"document.querySelector('#month').value = '{MONTH}'")
    assert await page.click_and_wait("#show") == 200
    assert f"服务统计 · {MONTH}" in await page.text("h1")
    assert await page.text("#scope") == "周至县"
    for chart in ("per-day", "by-crop", "by-category", "by-county", "bot-vs-human"):
        assert await page.count(f"#{chart} svg g.bar") > 0, chart
    for chart in ("first-reply", "time-to-close", "satisfaction", "per-commissioner"):
        assert await page.exists(f"#{chart} svg"), chart
    assert await page.exists('#per-commissioner g.bar[data-label="王猕"][data-value="2.0"]')
    # The charts are drawn: their bars have a size on screen.
    assert await page.eval("document.querySelector('#per-day rect').getBBox().width > 0")
    commissioners = await page.text("#commissioners")
    assert "王猕" in commissioners and "赵眉" not in commissioners  # 眉县's: not in this scope
    await shot(page, "admin-dashboard")
    await page.resize(PHONE, mobile=True)  # an admin on a phone: charts shrink, no sideways page
    assert await page.page_width() <= PHONE[0]
    await shot(page, "admin-dashboard-phone")
    await page.resize(DESKTOP, mobile=False)

    # The monthly report, downloaded as Chrome downloads it.
    await page.click("#download")
    done = await page.wait_download()
    files = list(downloads.iterdir())
    assert len(files) == 1, files
    report = files[0]
    assert unquote(report.name) == f"ketepai-report-{MONTH}-周至县.xlsx"
    assert done.get("receivedBytes", report.stat().st_size) == report.stat().st_size
    county = _sheet(report, "按县")
    zz = county["周至县"]
    assert (zz["咨询数"], zz["转人工"], zz["接单数"], zz["已结案"]) == (2, 2, 2, 2)
    assert (zz["首次回复用时中位数(分)"], zz["满意度均分"], zz["评分数"]) == (20, 4, 2)
    assert "眉县" not in county  # a county admin's report keeps to the county
    wang = _sheet(report, "按专家")["王猕"]
    assert (wang["接单数"], wang["已回复"], wang["上门次数"]) == (2, 2, 1)
    assert len(_sheet(report, "求助单明细")) == 2  # November's cases in 周至县

    # Knowledge base: search, the most often 「没解决」 first, an unsafe card refused.
    assert await page.click_and_wait('nav a[href="/admin/kb"]') == 200
    await page.type("#kb-q", "菜青虫")
    assert await page.click_and_wait("#kb-search") == 200
    assert "q=" in await page.url()
    cards = await page.text("#cards")
    assert cards.index("cab-ok") < cards.index("cab-bad")
    await shot(page, "admin-kb")

    assert await page.click_and_wait('#cards a[href="/admin/kb/cab-bad"]') == 200
    assert "草稿" in await page.text("#card-status")
    assert await page.click_and_wait("#publish") == 422
    refused = await page.text("#refused")
    assert "不能发布" in refused and "甲胺磷" in refused
    assert "草稿" in await page.text("#card-status")
    await shot(page, "admin-kb-refused")
    with gw.sessions() as s:
        card = s.get(KbCard, "cab-bad")
        assert card is not None and card.status == "draft" and card.reviewer != "admin-zz"
        audit = [
            (a, d)
            for a, d in s.execute(select(CaseEvent.action, CaseEvent.detail)).all()
            if a.startswith("kb_")
        ]
    assert audit == [("kb_publish", "cab-bad refused: unsafe")]
    assert not page.console_errors
