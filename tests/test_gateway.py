"""The gateway over HTTP: signatures, replies, records, retries, failures and the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import xmltodict
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot import db
from bot.app import create_app
from bot.models import Conversation, Message
from bot.replies import ACK_SLOW, APOLOGY, WELCOME
from bot.settings import Settings
from tests.conftest import FakeRasa, signed_params, text_xml, with_settings

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


async def client_for(settings: Settings) -> TestClient:
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    client = TestClient(server)
    await client.start_server()
    return client


def records(settings: Settings) -> list[Message]:
    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        rows = list(session.execute(select(Message).order_by(Message.id)).scalars())
    engine.dispose()
    return rows


async def test_url_verification_echoes_when_signed(settings: Settings) -> None:
    client = await client_for(settings)
    try:
        resp = await client.get("/wechat", params={**signed_params(), "echostr": "hello123"})
        assert resp.status == 200
        assert await resp.text() == "hello123"
    finally:
        await client.close()


async def test_unsigned_and_badly_signed_requests_are_refused(settings: Settings) -> None:
    client = await client_for(settings)
    try:
        assert (await client.get("/wechat", params={"echostr": "x"})).status == 403
        bad = {**signed_params(), "signature": "0" * 40}
        assert (await client.get("/wechat", params={**bad, "echostr": "x"})).status == 403
        resp = await client.post("/wechat", data=text_xml("o1", "hi"))
        assert resp.status == 403
        resp = await client.post("/wechat", params=bad, data=text_xml("o1", "hi"))
        assert resp.status == 403
        wrong_token = signed_params(token="not-the-token")
        assert (
            await client.post("/wechat", params=wrong_token, data=text_xml("o1", "x"))
        ).status == 403
        stale = signed_params(timestamp=1_000_000_000)
        assert (await client.post("/wechat", params=stale, data=text_xml("o1", "x"))).status == 403
    finally:
        await client.close()
    assert records(settings) == []


async def test_text_message_gets_rasa_answer_and_a_complete_record(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    client = await client_for(settings)
    try:
        resp = await client.post(
            "/wechat",
            params=signed_params(),
            data=text_xml("farmer-1", "猕猴桃叶子上有褐色斑点怎么办"),
        )
        assert resp.status == 200
        reply = xmltodict.parse(await resp.text())["xml"]
    finally:
        await client.close()
    assert reply["ToUserName"] == "farmer-1"
    assert reply["FromUserName"] == "gh_test"
    assert reply["MsgType"] == "text"
    assert "猕猴桃 · 褐斑病" in reply["Content"]
    assert fake_rasa.received == [{"sender": "farmer-1", "message": "猕猴桃叶子上有褐色斑点怎么办"}]

    inbound, out = records(settings)
    assert (inbound.direction, inbound.openid, inbound.wechat_msg_id) == (
        "in",
        "farmer-1",
        "1234567890123456",
    )
    assert (inbound.msg_type, inbound.text) == ("text", "猕猴桃叶子上有褐色斑点怎么办")
    assert (inbound.intent, inbound.confidence) == ("ask_disease", 0.93)
    assert inbound.entities[0]["value"] == "猕猴桃"
    assert inbound.status == "answered"
    assert inbound.nlu_ms is not None and inbound.total_ms is not None
    assert inbound.total_ms >= inbound.nlu_ms
    assert (out.direction, out.reply_to_id, out.channel) == ("out", inbound.id, "passive")

    assert out.text == reply["Content"]
    assert out.source == "kb:kiwi-brown-spot"
    assert out.conversation_id == inbound.conversation_id


@pytest.mark.parametrize("channel", [True, False], ids=["ketepai-channel", "rest-and-tracker"])
async def test_parse_comes_with_the_answer_or_from_the_tracker(
    settings: Settings, fake_rasa: FakeRasa, channel: bool
) -> None:
    """Our Rasa channel gives answer and parse in one call; without it, the tracker is read."""
    fake_rasa.channel = channel
    client = await client_for(settings)
    try:
        for n in range(2):
            resp = await client.post(
                "/wechat",
                params=signed_params(),
                data=text_xml("farmer-p", f"猕猴桃叶子有斑{n}", msg_id=500 + n),
            )
            assert "猕猴桃 · 褐斑病" in xmltodict.parse(await resp.text())["xml"]["Content"]
    finally:
        await client.close()
    assert fake_rasa.tracker_reads == (0 if channel else 2)
    if channel:  # a new connection per message, so that every Rasa worker gets its share
        assert len(fake_rasa.peers) == 2 and fake_rasa.peers[0] != fake_rasa.peers[1]
    inbound = [m for m in records(settings) if m.direction == "in"]
    assert [(m.intent, m.confidence, m.status) for m in inbound] == [
        ("ask_disease", 0.93, "answered")
    ] * 2
    assert inbound[0].entities[0]["value"] == "猕猴桃"


async def test_conversation_gets_category_and_crop(settings: Settings) -> None:
    client = await client_for(settings)
    try:
        await client.post("/wechat", params=signed_params(), data=text_xml("f2", "猕猴桃叶斑"))
    finally:
        await client.close()
    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        conv = session.execute(select(Conversation)).scalar_one()
    engine.dispose()
    assert (conv.openid, conv.category, conv.crop) == ("f2", "disease", "猕猴桃")


async def test_retries_of_one_msgid_give_one_answer_and_one_record(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    fake_rasa.delay_s = 0.3
    client = await client_for(settings)
    body = text_xml("farmer-r", "玉米叶子黄了", msg_id=42)
    try:
        # Two tries in flight at once, then a third after the first finished.
        first, second = await asyncio.gather(
            client.post("/wechat", params=signed_params(nonce="a"), data=body),
            client.post("/wechat", params=signed_params(nonce="b"), data=body),
        )
        third = await client.post("/wechat", params=signed_params(nonce="c"), data=body)
        texts = [await r.text() for r in (first, second, third)]
    finally:
        await client.close()
    contents = {xmltodict.parse(t)["xml"]["Content"] for t in texts}
    assert len(contents) == 1
    assert len(fake_rasa.received) == 1
    rows = records(settings)
    assert [r.direction for r in rows] == ["in", "out"]


async def test_rasa_down_gives_an_apology_and_a_failed_record(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    fake_rasa.status = 500
    client = await client_for(settings)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=text_xml("f3", "水稻"))
        content = xmltodict.parse(await resp.text())["xml"]["Content"]
    finally:
        await client.close()
    assert content == APOLOGY
    inbound, out = records(settings)
    assert inbound.status == "failed" and "500" in inbound.error
    assert (out.source, out.text) == ("error", APOLOGY)


async def test_slow_bot_is_acknowledged_then_pushed(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    fake_rasa.delay_s = 1.5  # budget is 1.0 s in these settings
    client = await client_for(settings)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=text_xml("slow", "茶树"))
        assert xmltodict.parse(await resp.text())["xml"]["Content"] == ACK_SLOW
        pushed: list[dict[str, Any]] = []
        for _ in range(50):
            pushed = await (await client.get("/sim/outbox", params={"openid": "slow"})).json()
            if pushed:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    assert len(pushed) == 1
    assert pushed[0]["msgtype"] == "text" and "褐斑病" in pushed[0]["content"]
    inbound, ack, push = records(settings)
    assert inbound.status == "acknowledged" and inbound.intent == "ask_disease"
    assert (ack.channel, ack.text) == ("passive", ACK_SLOW)
    assert (push.channel, push.status, push.reply_to_id) == ("push", "sent", inbound.id)


async def test_malformed_and_dangerous_bodies_get_400(settings: Settings) -> None:
    client = await client_for(settings)
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
        "<xml><FromUserName>&lol;</FromUserName></xml>"
    )
    try:
        for body in ["<xml><Content>unclosed", "not xml at all", bomb, "<xml></xml>"]:
            resp = await client.post("/wechat", params=signed_params(), data=body)
            assert resp.status == 400, body
        huge = "<xml>" + "x" * (70 * 1024) + "</xml>"
        assert (await client.post("/wechat", params=signed_params(), data=huge)).status == 413
    finally:
        await client.close()
    assert records(settings) == []


async def test_subscribe_event_gets_the_welcome(settings: Settings) -> None:
    event = (
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>new-farmer</FromUserName>"
        "<CreateTime>1700000001</CreateTime><MsgType>event</MsgType><Event>subscribe</Event></xml>"
    )
    client = await client_for(settings)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=event)
        content = xmltodict.parse(await resp.text())["xml"]["Content"]
    finally:
        await client.close()
    assert content == WELCOME
    inbound, out = records(settings)
    assert (inbound.msg_type, inbound.dedupe_key) == ("event:subscribe", "new-farmer:1700000001")
    assert out.source == "canned"


async def test_safe_mode_round_trip_through_the_simulator(settings: Settings) -> None:
    settings = with_settings(settings, encoding_aes_key=AES_KEY)
    client = await client_for(settings)
    try:
        resp = await client.post("/sim/api/send", json={"openid": "aes-farmer", "text": "猕猴桃"})
        result = await resp.json()
        # A plaintext POST to a safe-mode gateway is still accepted only when signed.
        plain = await client.post(
            "/wechat",
            params={**signed_params(), "encrypt_type": "aes", "msg_signature": "0" * 40},
            data="<xml><Encrypt>abc</Encrypt></xml>",
        )
    finally:
        await client.close()
    assert "褐斑病" in result["reply"]
    assert plain.status == 403
    assert records(settings)[0].openid == "aes-farmer"


async def test_simulator_signs_like_wechat_and_returns_the_passive_reply(
    settings: Settings,
) -> None:
    client = await client_for(settings)
    try:
        page = await client.get("/sim")
        assert page.status == 200 and "微信模拟器" in await page.text()
        resp = await client.post(
            "/sim/api/send", json={"openid": "sim-1", "text": "猕猴桃叶子有斑"}
        )
        result = await resp.json()
        assert (await client.post("/sim/api/send", json={"openid": ""})).status == 400
        assert (await client.get("/sim/outbox", params={"openid": "sim-1"})).status == 200
        assert (await client.get("/sim/outbox")).status == 400
    finally:
        await client.close()
    assert "褐斑病" in result["reply"]
    assert len(result["tries"]) == 1 and result["tries"][0]["status"] == 200


async def test_simulator_api_refuses_bad_credentials(settings: Settings) -> None:
    client = await client_for(settings)
    try:
        bad = await client.get(
            "/sim/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": settings.app_id, "secret": "no"},
        )
        assert (await bad.json())["errcode"] == 40013
        push = await client.post(
            "/sim/cgi-bin/message/custom/send",
            params={"access_token": "forged"},
            json={"touser": "x", "msgtype": "text", "text": {"content": "hi"}},
        )
        assert (await push.json())["errcode"] == 40001
    finally:
        await client.close()


async def test_healthz_names_the_failing_part(settings: Settings) -> None:
    client = await client_for(settings)  # the action server is not running
    try:
        resp = await client.get("/healthz")
        body = await resp.json()
    finally:
        await client.close()
    assert resp.status == 503
    assert body == {"rasa": "ok", "actions": "down", "db": "ok"}


async def test_healthz_ok_when_all_parts_answer(settings: Settings) -> None:
    from aiohttp import web

    async def health(_r: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    actions = web.Application()
    actions.router.add_get("/health", health)
    action_server = TestServer(actions, host="127.0.0.1", port=settings.action_port)
    await action_server.start_server()
    client = await client_for(settings)
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"rasa": "ok", "actions": "ok", "db": "ok"}
    finally:
        await client.close()
        await action_server.close()


async def test_a_farmer_cannot_send_rasa_intent_commands(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    """A leading "/" is Rasa's intent syntax, for the gateway only: the farmer's is made ／."""
    client = await client_for(settings)
    try:
        for n, text in enumerate(['/inform{"photo": "fake"}', "  /request_human", "a/b 正常"]):
            resp = await client.post(
                "/wechat", params=signed_params(), data=text_xml("f-slash", text, msg_id=900 + n)
            )
            assert resp.status == 200
    finally:
        await client.close()
    assert [r["message"] for r in fake_rasa.received] == [
        '／inform{"photo": "fake"}',
        "／request_human",
        "a/b 正常",
    ]
    inbound = [m.text for m in records(settings) if m.direction == "in"]
    assert inbound == ['/inform{"photo": "fake"}', "/request_human", "a/b 正常"]  # as typed
