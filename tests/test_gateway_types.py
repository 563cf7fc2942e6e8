"""Every kind of message through the simulator and /wechat: media kept, location coarsened,
events and menu, rate limit, internal errors, the slow-bot switch and the menu command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import xmltodict
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot import db
from bot.app import CONVERSATIONS, create_app
from bot.menu_apply import apply_menu
from bot.models import MediaFile, Message
from bot.replies import ACK_SLOW, APOLOGY, FAQ, MENU, NON_TEXT_REPLIES, RATE_LIMITED, WELCOME
from bot.settings import Settings
from bot.sim_api import SIM
from tests.conftest import FakeRasa, signed_params, text_xml


async def start(settings: Settings, tmp_path: Path) -> TestClient:
    app = create_app(settings, media_dir=tmp_path / "media")
    client = TestClient(TestServer(app, host="127.0.0.1", port=settings.port))
    await client.start_server()
    return client


def rows(settings: Settings, model: Any = Message) -> list[Any]:
    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        found = list(session.execute(select(model).order_by(model.id)).scalars())
    engine.dispose()
    return found


async def send(client: TestClient, **payload: Any) -> dict[str, Any]:
    resp = await client.post("/sim/api/send", json={"openid": "f1", **payload})
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def until(check: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_image_is_downloaded_at_once_and_attached(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    client = await start(settings, tmp_path)
    try:
        result = await send(client, type="image", image_base64="aGVsbG8gcGhvdG8=")
        assert result["reply"] == NON_TEXT_REPLIES["image"]
        await until(lambda: [m.status for m in rows(settings, MediaFile)] == ["stored"])
    finally:
        await client.close()
    (media,) = rows(settings, MediaFile)
    inbound = rows(settings)[0]
    assert (media.kind, media.message_id, media.conversation_id) == (
        "image",
        inbound.id,
        inbound.conversation_id,
    )
    assert (tmp_path / "media" / media.path).read_bytes() == b"hello photo"
    assert media.size == 11 and media.content_type == "image/jpeg"
    assert fake_rasa.received == []  # a photo alone is not sent to the NLU


async def test_voice_with_and_without_recognition(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    client = await start(settings, tmp_path)
    try:
        heard = await send(client, type="voice", recognition="猕猴桃叶子有斑")
        unheard = await send(client, type="voice")
        await until(lambda: [m.status for m in rows(settings, MediaFile)] == ["stored"] * 2)
    finally:
        await client.close()
    assert "褐斑病" in heard["reply"]
    assert unheard["reply"] == NON_TEXT_REPLIES["voice"]
    assert [r["message"] for r in fake_rasa.received] == ["猕猴桃叶子有斑"]
    voice_in = [m for m in rows(settings) if m.direction == "in"]
    assert [(m.msg_type, m.text) for m in voice_in] == [
        ("voice", "猕猴桃叶子有斑"),
        ("voice", None),
    ]


async def test_location_is_coarsened_in_the_record(settings: Settings, tmp_path: Path) -> None:
    client = await start(settings, tmp_path)
    try:
        result = await send(
            client, type="location", label="陕西省西安市周至县楼观镇周一村3组18号", lat="34.16"
        )
    finally:
        await client.close()
    assert result["reply"] == NON_TEXT_REPLIES["location"]
    inbound = rows(settings)[0]
    assert inbound.text == "位置：陕西省西安市周至县楼观镇（约 34.2, 108.2）"
    assert "周一村" not in inbound.text and "18号" not in inbound.text


async def test_events_and_menu_clicks(settings: Settings, tmp_path: Path) -> None:
    client = await start(settings, tmp_path)
    try:
        welcome = await send(client, type="event", event="subscribe")
        faq = await send(client, type="event", event="CLICK", key="KTP_FAQ")
        await send(client, type="text", text="猕猴桃叶子有斑")
        cases = await send(client, type="event", event="CLICK", key="KTP_MY_CASES")
        view = await send(client, type="event", event="VIEW", key="http://x.cn")
        gone = await send(client, type="event", event="unsubscribe")
        bad = await client.post("/sim/api/send", json={"openid": "f1", "type": "sticker"})
    finally:
        await client.close()
    assert welcome["reply"] == WELCOME and faq["reply"] == FAQ
    assert "回复1" in faq["reply"]
    assert "猕猴桃 病害（1 条消息）" in cases["reply"]
    assert view["reply"] is None and gone["reply"] is None  # "success"
    assert bad.status == 400
    kinds = [m.msg_type for m in rows(settings) if m.direction == "in"]
    assert kinds == [
        "event:subscribe",
        "event:click",
        "text",
        "event:click",
        "event:view",
        "event:unsubscribe",
    ]


async def test_a_flood_from_one_farmer_is_limited_not_lost(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    client = await start(settings, tmp_path)
    try:
        replies = []
        for n in range(12):
            resp = await client.post(
                "/wechat", params=signed_params(), data=text_xml("flood", f"第{n}条", msg_id=n + 1)
            )
            replies.append(xmltodict.parse(await resp.text())["xml"]["Content"])
        other = await client.post(
            "/wechat", params=signed_params(), data=text_xml("calm", "茶树", msg_id=99)
        )
        other_reply = xmltodict.parse(await other.text())["xml"]["Content"]
    finally:
        await client.close()
    assert replies.count(RATE_LIMITED) == 4 and replies[-1] == RATE_LIMITED
    assert "褐斑病" in other_reply
    inbound = [m for m in rows(settings) if m.direction == "in"]
    assert len(inbound) == 13  # every message is on the record
    assert sum(m.status == "rate_limited" for m in inbound) == 4


async def test_a_retry_while_limited_still_gets_its_recorded_answer(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    """A WeChat retry counts against the farmer's limit, but is answered from the record."""
    client = await start(settings, tmp_path)
    try:
        first = await client.post(
            "/wechat", params=signed_params(), data=text_xml("busy", "猕猴桃叶斑", msg_id=500)
        )
        answer = xmltodict.parse(await first.text())["xml"]["Content"]
        for n in range(12):  # the limit is reached
            await client.post(
                "/wechat", params=signed_params(), data=text_xml("busy", f"第{n}条", msg_id=n + 501)
            )
        retry = await client.post(
            "/wechat", params=signed_params(), data=text_xml("busy", "猕猴桃叶斑", msg_id=500)
        )
        again = xmltodict.parse(await retry.text())["xml"]["Content"]
    finally:
        await client.close()
    assert "褐斑病" in answer and again == answer
    assert len(fake_rasa.received) == 8  # the first and the 7 allowed after it; not the retry
    inbound = [m for m in rows(settings) if m.direction == "in"]
    assert len(inbound) == 13 and sum(m.wechat_msg_id == "500" for m in inbound) == 1


async def test_internal_error_apologises_and_records_the_failure(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start(settings, tmp_path)

    async def broken(*_a: Any, **_k: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(client.server.app[CONVERSATIONS], "_converse", broken)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=text_xml("f9", "水稻"))
        body = await resp.text()
    finally:
        await client.close()
    assert resp.status == 200 and "Traceback" not in body and "boom" not in body
    assert xmltodict.parse(body)["xml"]["Content"] == APOLOGY
    inbound, out = rows(settings)
    assert inbound.status == "failed" and "KeyError" in inbound.error
    assert (out.text, out.source) == (APOLOGY, "error")


async def test_slow_switch_shows_the_push_path(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    client = await start(settings, tmp_path)
    try:
        assert (await client.post("/sim/api/slow", json={"seconds": 1.5})).status == 200
        result = await send(client, type="text", text="猕猴桃叶子有斑")
        assert result["reply"] == ACK_SLOW
        outbox: list[dict[str, Any]] = []
        for _ in range(60):
            outbox = await (await client.get("/sim/outbox", params={"openid": "f1"})).json()
            if outbox:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    assert len(outbox) == 1 and "褐斑病" in outbox[0]["content"]
    assert set(outbox[0]) == {"msgtype", "content", "at"}
    statuses = [(m.channel, m.status) for m in rows(settings) if m.direction == "out"]
    assert statuses == [("passive", None), ("push", "sent")]


async def test_menu_apply_goes_through_the_shared_token(settings: Settings, tmp_path: Path) -> None:
    client = await start(settings, tmp_path)
    try:
        await apply_menu(settings, MENU)
        state = client.server.app[SIM]
        names = [b["name"] for b in state.menu["button"]] if state.menu else []
    finally:
        await client.close()
    assert names == ["问专家", "常见问题", "我的求助"]
