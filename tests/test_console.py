"""The console over HTTP (aiohttp test client), on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from bot import console, db, handoff, passwords, roster
from bot.console.auth import COOKIE
from bot.handoff_models import CaseEvent
from bot.handoff_push import Window
from tests.handoff_helpers import RecordingSender, data_key, seed_roster

__all__ = ["data_key"]  # fixture
PASSWORD = "correct horse battery"
HASH = passwords.hash_password


def open_window(openid: str, *, session: Any, now: Any) -> Window:
    return Window(now + timedelta(hours=47), 4)


@pytest.fixture
def sessions(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Cheaper scrypt for the test accounts (verification reads the cost from the hash).
    monkeypatch.setattr(passwords, "hash_password", functools.partial(HASH, n=2**10))
    maker = db.make_sessionmaker(engine)
    with maker() as session:
        seed_roster(session)
        for username, role, county, openid in (
            ("wang", "commissioner", None, "c-kiwi"),
            ("li", "commissioner", None, "c-fruit"),
            ("zhao", "commissioner", None, "c-mei"),
            ("admin-zz", "admin", "周至县", None),
            ("admin-mx", "admin", "眉县", None),
        ):
            roster.add_account(
                session=session,
                username=username,
                password=PASSWORD,
                role=role,
                county=county,
                commissioner_openid=openid,
            )
        handoff.open_case(
            "farmer-1",
            session=session,
            crop="猕猴桃",
            category="disease",
            county="周至县",
            township="楼观镇",
            symptoms="叶片褐斑",
            phone="13812345678",
            media=[{"kind": "image", "media_id": "m1"}],
            transcript=[
                {"dir": "in", "who": "farmer", "text": "叶子有斑<b>", "at": "2026-11-22T08:00"}
            ],
        )
        session.commit()
    return maker


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any, sender: RecordingSender) -> TestClient:
    app = web.Application()
    console.setup(app, sessions=sessions, sender=sender, window=open_window, secret=b"s" * 32)
    return await aiohttp_client(app)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in; the CSRF token of the session."""
    page = await (await client.get("/console/login")).text()
    resp = await client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf": csrf_of(page)},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    return csrf_of(await (await client.get("/console/")).text())


async def test_pages_need_a_login_and_a_right_password(client: TestClient) -> None:
    resp = await client.get("/console/cases/1", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    page = await (await client.get("/console/login")).text()
    resp = await client.post(
        "/console/login", data={"username": "wang", "password": "wrong", "csrf": csrf_of(page)}
    )
    assert resp.status == 401 and "用户名或密码不对" in await resp.text()
    await login(client, "wang")
    cookie = next(c for c in client.session.cookie_jar if c.key == COOKIE)
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    # A tampered cookie is no session.
    tampered = cookie.value[:-2] + ("00" if not cookie.value.endswith("00") else "11")
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: tampered})
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303


async def test_posts_without_the_csrf_token_are_refused(client: TestClient) -> None:
    page = await (await client.get("/console/login")).text()
    resp = await client.post("/console/login", data={"username": "wang", "password": PASSWORD})
    assert resp.status == 403
    await login(client, "wang")
    for data in ({}, {"csrf": "forged"}):
        resp = await client.post("/console/cases/1/claim", data=data)
        assert resp.status == 403
    assert "待接单" in await (await client.get("/console/cases/1")).text()
    assert csrf_of(page)


async def test_claim_reply_visit_close_through_the_console(
    client: TestClient, sender: RecordingSender, sessions: Any
) -> None:
    csrf = await login(client, "wang")
    queue = await (await client.get("/console/")).text()
    assert 'href="/console/cases/1"' in queue and "claim-1" in queue
    page = await (await client.get("/console/cases/1")).text()
    assert "138****5678" in page and "13812345678" not in page  # not theirs yet: masked
    assert "叶子有斑&lt;b&gt;" in page  # the transcript, escaped
    assert "还剩 47 小时" in page and "可推送 4 条" in page
    assert "/console/cases/1/media/0" in page
    for action, data in (
        ("claim", {}),
        ("reply", {"text": "剪掉病叶，喷代森锰锌"}),
        ("visit", {"when": "明天上午"}),
        ("visited", {}),
        ("close", {"resolution": "褐斑病，已控制"}),
    ):
        resp = await client.post(f"/console/cases/1/{action}", data={"csrf": csrf, **data})
        assert resp.status == 200 and resp.url.path == "/console/cases/1", await resp.text()
    page = await resp.text()
    assert "已结案" in page and "13812345678" in page  # the assigned commissioner sees it
    assert sender.to("farmer-1")[0] == "【专家回复 #1】剪掉病叶，喷代森锰锌"
    assert "打分" in sender.to("farmer-1")[-1]
    resp = await client.post("/console/cases/1/close", data={"csrf": csrf, "resolution": "x"})
    assert resp.status == 409 and "不能结案" in await resp.text()
    with sessions() as session:
        acts = list(
            session.execute(select(CaseEvent.action, CaseEvent.actor).where(CaseEvent.case_id == 1))
        )
    assert ("claim", "account:wang") in acts and ("close", "account:wang") in acts
    assert ("viewed", "account:wang") in acts and ("viewed_phone", "account:wang") in acts


async def test_who_may_see_and_do_what(client: TestClient) -> None:
    csrf = await login(client, "zhao")  # another county's commissioner
    resp = await client.get("/console/cases/1")
    assert resp.status == 403
    assert "/console/cases/1" not in await (await client.get("/console/")).text()
    resp = await client.post("/console/cases/1/claim", data={"csrf": csrf})
    assert resp.status == 403
    await client.post("/console/logout", data={"csrf": csrf})

    csrf = await login(client, "wang")
    await client.post("/console/cases/1/claim", data={"csrf": csrf})
    await client.post("/console/logout", data={"csrf": csrf})

    csrf = await login(client, "li")  # same county, but the case is wang's now
    assert (await client.get("/console/cases/1")).status == 403
    resp = await client.post("/console/cases/1/reply", data={"csrf": csrf, "text": "我来"})
    assert resp.status == 403
    await client.post("/console/logout", data={"csrf": csrf})

    await login(client, "admin-zz")  # the county's admin: sees it, phone masked
    page = await (await client.get("/console/cases/1")).text()
    assert "138****5678" in page and "13812345678" not in page
    csrf = csrf_of(page)
    await client.post("/console/logout", data={"csrf": csrf})
    await login(client, "admin-mx")  # another county's admin: does not
    assert (await client.get("/console/cases/1")).status == 403


async def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = await login(client, "wang")
    resp = await client.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"


async def test_a_reply_held_for_a_quiet_farmer_shows_as_waiting(
    client: TestClient, sender: RecordingSender, sessions: Any
) -> None:
    token = await login(client, "wang")
    await client.post("/console/cases/1/claim", data={"csrf": token})
    sender.refuse, sender.refuse_for = "window_closed", {"farmer-1"}
    resp = await client.post("/console/cases/1/reply", data={"csrf": token, "text": "先剪病叶"})
    page = await resp.text()
    assert resp.status == 200 and "先剪病叶" in page
    assert "等待农户发消息后送达" in page and "已发模板消息通知农户" in page
    assert 'id="held"' in page and "有 1 条回复在等农户" in page
    assert [(o, role) for o, role, _, _ in sender.templates] == [("farmer-1", "reply")]
    with sessions() as session:
        acts = list(
            session.execute(select(CaseEvent.action).where(CaseEvent.case_id == 1)).scalars()
        )
    assert "reply_held" in acts and "template_sent" in acts
