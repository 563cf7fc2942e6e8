"""/admin over HTTP: admins only, a county admin sees their county, charts and the report."""

from __future__ import annotations

import functools
import io
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook
from sqlalchemy.engine import Engine

from bot import admin, console, db, passwords, roster
from bot.admin import charts
from tests.admin_helpers import seed_month
from tests.handoff_helpers import RecordingSender, data_key
from tests.test_console import PASSWORD, login, open_window

__all__ = ["data_key"]


@pytest.fixture
def sessions(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(
        passwords, "hash_password", functools.partial(passwords.hash_password, n=2**10)
    )
    maker = db.make_sessionmaker(engine)
    with maker() as session:
        seed_month(session)
        for username, role, county, openid in (
            ("wang", "commissioner", None, "c-kiwi"),
            ("admin-zz", "admin", "周至县", None),
            ("admin-prov", "admin", None, None),
        ):
            roster.add_account(
                session=session,
                username=username,
                password=PASSWORD,
                role=role,
                county=county,
                commissioner_openid=openid,
            )
        session.commit()
    return maker


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any) -> TestClient:
    app = web.Application()
    console.setup(
        app, sessions=sessions, sender=RecordingSender(), window=open_window, secret=b"s" * 32
    )
    admin.setup(app)
    return await aiohttp_client(app)


async def test_admin_needs_a_login_and_the_admin_role(client: TestClient) -> None:
    resp = await client.get("/admin/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    await login(client, "wang")
    for path in ("/admin/", "/admin/report.xlsx?month=2026-11"):
        resp = await client.get(path)
        assert resp.status == 403, path


async def test_county_admin_sees_their_county(client: TestClient) -> None:
    await login(client, "admin-zz")
    resp = await client.get("/admin/?month=2026-11")
    page = await resp.text()
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert '<span id="scope">周至县</span>' in page
    assert 'data-label="王猕" data-value="2.0"' in page  # per-commissioner chart
    assert "赵眉" not in page  # 眉县's commissioner is not in 周至县's view
    for chart in ("per-day", "by-crop", "by-category", "first-reply", "satisfaction"):
        assert f'id="{chart}"' in page
    assert (await client.get("/admin/?month=2026-13")).status == 400


async def test_province_admin_downloads_the_report(client: TestClient) -> None:
    await login(client, "admin-prov")
    page = await (await client.get("/admin/?month=2026-11")).text()
    assert "赵眉" in page and 'id="download"' in page
    resp = await client.get("/admin/report.xlsx?month=2026-11")
    assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
    ws = load_workbook(io.BytesIO(await resp.read()))["按县"]
    total = next(r for r in ws.iter_rows(values_only=True) if r[0] == "合计")
    assert total[2:5] == (6, 2, 4)  # consultations, bot-answered, handed off


def test_time_buckets_and_empty_chart() -> None:
    assert [n for _, n in charts.bucket([0, 30, 31, 5000])] == [2, 1, 0, 0, 0, 1]
    assert "暂无数据" in charts.bars("x", "<t>", [])
    assert "&lt;t&gt;" in charts.bars("x", "<t>", [("<b>", 1)])
