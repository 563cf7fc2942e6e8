"""The commissioners' console in headless chromium, on a phone-width window (390 px)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import handoff
from bot.console.auth import COOKIE
from bot.handoff_models import Case, CaseEvent
from bot.models import OutboxItem
from bot.roster import utcnow
from tests.admin_helpers import conversation
from tests.browser.cdp import PHONE, Browser, Page
from tests.browser.conftest import Gateway, add_accounts, login, logout, shot
from tests.handoff_helpers import RecordingSender, seed_roster

pytestmark = pytest.mark.browser
REPLY = "剪掉病叶集中烧毁，再喷一次代森锰锌"
RESOLUTION = "褐斑病，已控制"


def seed(session: Session) -> None:
    """The roster, the accounts, and farmer-1's case #1 in 周至县 (asked just now: window open)."""
    seed_roster(session)
    add_accounts(session)
    now = utcnow()
    conv = conversation(session, "farmer-1", now, "disease", "猕猴桃")
    handoff.open_case(
        "farmer-1",
        session=session,
        crop="猕猴桃",
        category="disease",
        county="周至县",
        township="楼观镇",
        symptoms="叶片上有褐色斑点，边缘发黄",
        phone="13812345678",
        conversation_id=conv.id,
        transcript=[{"dir": "in", "who": "farmer", "text": "猕猴桃叶子有褐斑<b>", "at": "now"}],
        sender=RecordingSender(),
        now=now,
    )


async def fits_the_phone(page: Page) -> None:
    """No sideways scrolling at 390 px."""
    width = await page.page_width()
    assert width <= PHONE[0], f"{await page.path()} is {width} px wide on a {PHONE[0]} px phone"


async def test_a_commissioner_claims_answers_and_closes_a_case(
    browser: Browser, start_gateway: Any
) -> None:
    gw: Gateway = await start_gateway(seed)
    page = await browser.new_page()

    await page.goto(gw("/console/"))
    assert await page.path() == "/console/login"  # not signed in: to the login form
    await fits_the_phone(page)
    await shot(page, "console-login")
    assert await login(page, gw, "wang") == 200
    assert await page.path() == "/console/"
    waiting = await page.text("#waiting")
    assert "#1" in waiting and "猕猴桃" in waiting and "周至县" in waiting
    assert await page.exists("#claim-1")
    await fits_the_phone(page)
    await shot(page, "console-queue")

    assert await page.click_and_wait('#waiting a[href="/console/cases/1"]') == 200
    assert await page.path() == "/console/cases/1"
    facts = await page.text("#facts")
    assert "138****5678" in facts and "13812345678" not in facts  # not theirs yet: masked
    assert "猕猴桃叶子有褐斑<b>" in await page.text("#transcript")  # shown as text, not markup
    assert "还剩 47 小时" in await page.text("#window")
    assert "待接单" in await page.text("#status")

    assert await page.click_and_wait("#claim") == 200
    assert "已接单" in await page.text("#status")
    assert "13812345678" in await page.text("#facts")  # the assigned commissioner sees it

    await page.type("#reply-text", REPLY)
    assert await page.value("#reply-text") == REPLY
    assert await page.click_and_wait("#reply") == 200
    assert "已回复" in await page.text("#status")
    assert REPLY in await page.text("#transcript")
    assert "可推送 4 条" in await page.text("#window")  # one of the five pushes used
    await fits_the_phone(page)
    await shot(page, "console-case")

    await page.type("#resolution", RESOLUTION)
    assert await page.click_and_wait("#close") == 200
    assert "已结案" in await page.text("#status")
    assert RESOLUTION in await page.text("#facts")
    assert not await page.exists("#reply")  # nothing more to do on a closed case
    await fits_the_phone(page)
    await shot(page, "console-case-closed")

    with gw.sessions() as s:
        case = s.get(Case, 1)
        assert case is not None
        assert (case.status, case.resolution) == ("closed", RESOLUTION)
        assert case.commissioner is not None and case.commissioner.name == "王猕"
        assert case.first_reply_at is not None and case.closed_at is not None
        assert "13812345678" not in (case.phone_enc or "")  # encrypted at rest
        pushes = [o.content for o in s.execute(select(OutboxItem)).scalars()]
        assert f"【专家回复 #1】{REPLY}" in pushes
        acts = set(s.execute(select(CaseEvent.action, CaseEvent.actor)).all())
    for action in ("login", "claim", "reply", "close", "viewed_phone"):
        assert (action, "account:wang") in acts, action

    # Someone else in the county: the case is wang's now.
    await logout(page)
    await login(page, gw, "li")
    assert "#1" not in await page.text("#mine")
    assert await page.goto(gw("/console/cases/1")) == 403
    assert "不是您能查看的求助单" in await page.text("#message")
    await logout(page)
    # The county's admin sees it, with the phone masked.
    await login(page, gw, "admin-zz")
    assert await page.goto(gw("/console/cases/1")) == 200
    facts = await page.text("#facts")
    assert "138****5678" in facts and "13812345678" not in facts
    assert not page.console_errors


def seed_accounts(session: Session) -> None:
    seed_roster(session)
    add_accounts(session)


async def test_wrong_password_and_a_commissioner_at_admin(
    browser: Browser, start_gateway: Any
) -> None:
    gw: Gateway = await start_gateway(seed_accounts)
    page = await browser.new_page()

    assert await login(page, gw, "wang", "not the password") == 401
    assert await page.path() == "/console/login"
    assert "用户名或密码不对" in await page.text("main")
    assert COOKIE not in {c["name"] for c in await page.cookies()}
    await shot(page, "console-login-refused")

    assert await login(page, gw, "wang") == 200
    cookie = next(c for c in await page.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.goto(gw("/admin/")) == 403
    assert "没有权限" in await page.text("main")
    assert not await page.exists("#kpis")
    await fits_the_phone(page)
    await shot(page, "admin-forbidden")
    with gw.sessions() as s:
        acts = [a for (a,) in s.execute(select(CaseEvent.action)).all()]
    assert acts.count("login_failed") == 1 and acts.count("login") == 1


def seed_quiet_farmer(session: Session) -> None:
    """Case #1 of a farmer who has not written in the last 48 h (no message on record)."""
    seed_roster(session)
    add_accounts(session)
    handoff.open_case(
        "farmer-quiet", session=session, crop="猕猴桃", county="周至县", symptoms="落叶",
        sender=RecordingSender(),
    )  # fmt: skip


async def test_a_reply_to_a_farmer_outside_the_window_waits_visibly(
    browser: Browser, start_gateway: Any
) -> None:
    gw: Gateway = await start_gateway(seed_quiet_farmer)
    page = await browser.new_page()
    assert await login(page, gw, "wang") == 200
    assert await page.goto(gw("/console/cases/1")) == 200
    assert "已关闭" in await page.text("#window")
    assert await page.click_and_wait("#claim") == 200
    await page.type("#reply-text", REPLY)
    assert await page.click_and_wait("#reply") == 200
    transcript = await page.text("#transcript")
    assert REPLY in transcript and "等待农户发消息后送达" in transcript
    assert "已发模板消息通知农户" in transcript
    assert "有 1 条回复在等农户" in await page.text("#held")
    assert "template_sent" in await page.text("#events")
    await fits_the_phone(page)
    await shot(page, "console-case-held")
    with gw.sessions() as s:
        rows = [(o.openid, o.msgtype) for o in s.execute(select(OutboxItem)).scalars()]
    assert ("farmer-quiet", "template") in rows and ("farmer-quiet", "text") not in rows
    assert not page.console_errors
