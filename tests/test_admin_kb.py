"""/admin/kb: the most failing cards first, edit, publish with the safety check, retire, Excel."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook
from sqlalchemy import select

from bot.handoff_models import CaseEvent
from bot.kb_models import KbCard
from bot.kb_store import record_feedback, upsert_cards
from bot.knowledge import Card
from tests.handoff_helpers import data_key
from tests.test_admin_dashboard import client, sessions
from tests.test_console import login

__all__ = ["client", "data_key", "sessions"]


def _card(card_id: str, chemical: str, status: str = "draft") -> Card:
    return Card(
        id=card_id,
        crop="白菜",
        crops=("白菜",),
        category="pest",
        topic="菜青虫",
        summary="菜青虫啃食叶片。",
        control={"chemical": (chemical,)},
        status=status,
        flags=("unreviewed",),
    )


@pytest.fixture
def cards(sessions: Any) -> Any:
    with sessions() as session, session.begin():
        upsert_cards(
            session,
            [
                (_card("cab-ok", "用苏云金杆菌喷雾。", "published"), None),
                (_card("cab-bad", "用甲胺磷喷雾。"), None),
            ],
        )
        for _ in range(3):
            record_feedback(session, card_id="cab-ok", sender="f", helpful=False, text="没用")
    return sessions


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


async def test_list_edit_publish_retire(client: TestClient, cards: Any) -> None:
    await login(client, "admin-zz")
    page = await (await client.get("/admin/kb?q=菜青虫")).text()
    assert page.index("cab-ok") < page.index("cab-bad")  # 3×「没解决」 first
    token = csrf(page)

    resp = await client.post("/admin/kb/cab-bad/publish", data={"csrf": token})
    text = await resp.text()
    assert resp.status == 422 and 'id="refused"' in text and "甲胺磷" in text
    with cards() as s:
        assert s.get(KbCard, "cab-bad").status == "draft"

    form = {"csrf": token, "topic": "菜青虫", "summary": "菜青虫啃叶。"}
    form["control.chemical"] = "用苏云金杆菌喷雾。\n用甲维盐喷雾。"
    resp = await client.post("/admin/kb/cab-bad/edit", data=form)
    assert resp.status == 200 and "草稿" in await resp.text()
    resp = await client.post("/admin/kb/cab-bad/publish", data={"csrf": token})
    assert resp.status == 200 and "已发布" in await resp.text()
    with cards() as s:
        row = s.get(KbCard, "cab-bad")
        assert row.status == "published" and row.reviewer == "admin-zz"
        assert row.control["chemical"] == ["用苏云金杆菌喷雾。", "用甲维盐喷雾。"]
        assert not any(f.startswith("unsafe") for f in row.flags)
        actions = [ev.action for ev in s.execute(select(CaseEvent)).scalars()]
        assert {"kb_publish", "kb_edit"} <= set(actions)

    await client.post("/admin/kb/cab-ok/retire", data={"csrf": token})
    with cards() as s:
        assert s.get(KbCard, "cab-ok").status == "retired"
    assert (await client.post("/admin/kb/cab-ok/retire", data={})).status == 403


async def test_excel_round_trip(client: TestClient, cards: Any) -> None:
    await login(client, "admin-prov")
    token = csrf(await (await client.get("/admin/kb")).text())
    resp = await client.get("/admin/kb/export.xlsx")
    wb = load_workbook(io.BytesIO(await resp.read()))
    ws = wb.active
    header = [c.value for c in ws[1]]
    ids = [r[0] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert ids == ["cab-bad", "cab-ok"]
    ws.cell(row=2, column=header.index("summary") + 1, value="改过的摘要。")
    ws.append(
        ["cab-new", "萝卜", "pest", "蚜虫", "腻虫", "蚜虫吸汁。"] + [None] * (len(header) - 6)
    )
    buffer = io.BytesIO()
    wb.save(buffer)
    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", buffer.getvalue(), filename="kb.xlsx")
    resp = await client.post("/admin/kb/import", data=data)
    assert resp.status == 200 and "新增 1" in await resp.text()
    with cards() as s:
        new = s.get(KbCard, "cab-new")
        assert new.status == "draft" and new.aliases == ["腻虫"] and new.crops == ["萝卜"]
        changed = s.get(KbCard, "cab-bad")
        assert changed.summary == "改过的摘要。" and changed.status == "draft"
        assert s.get(KbCard, "cab-ok").status == "published"  # unchanged: keeps its review
