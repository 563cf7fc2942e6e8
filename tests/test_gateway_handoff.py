"""The handoff in the gateway (fake Rasa): commissioners' commands and farmers' messages during a
case never reach Rasa; Rasa is paused while a case is open and resumed after; the rating is kept."""

from __future__ import annotations

import asyncio
from typing import Any

import xmltodict
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot import db, handoff, roster
from bot.handoff_models import Case, CaseEvent
from bot.handoff_push import outbox_sender
from bot.models import Message, OutboxItem
from bot.settings import Settings
from tests.conftest import FakeRasa, signed_params, text_xml
from tests.test_gateway import client_for

MSG_ID = iter(range(7_000_000_000_000_000, 8_000_000_000_000_000))


async def say(client: TestClient, openid: str, text: str) -> str:
    resp = await client.post(
        "/wechat", params=signed_params(), data=text_xml(openid, text, msg_id=next(MSG_ID))
    )
    assert resp.status == 200
    body = await resp.text()
    return "" if body == "success" else str(xmltodict.parse(body)["xml"]["Content"])


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def in_db(settings: Settings, work: Any) -> Any:
    engine = db.make_engine(settings.database_url)
    try:
        with db.make_sessionmaker(engine)() as session, session.begin():
            return work(session)
    finally:
        engine.dispose()


def case_events(settings: Settings) -> list[str]:
    return in_db(
        settings,
        lambda s: list(s.execute(select(CaseEvent.action).order_by(CaseEvent.id)).scalars()),
    )


async def test_a_case_from_first_forward_to_rating_and_back_to_the_bot(
    settings: Settings, fake_rasa: FakeRasa
) -> None:
    client = await client_for(settings)
    try:
        in_db(
            settings,
            lambda s: roster.add_commissioner(
                session=s, name="王猕", openid="c-kiwi", county="周至县",
                specialties=["猕猴桃"], on_duty=True,
            ),
        )  # fmt: skip
        assert "没有未结" in await say(client, "c-kiwi", "我的")
        await say(client, "farmer-1", "猕猴桃叶子黄了")  # opens the farmer's window
        assert len(fake_rasa.received) == 1
        cid = in_db(
            settings,
            lambda s: handoff.open_case(
                "farmer-1", session=s, crop="猕猴桃", county="周至县", symptoms="叶黄",
                sender=outbox_sender,
            ).id,
        )  # fmt: skip

        reply = await say(client, "farmer-1", "叶子还在掉")
        assert f"求助单 #{cid}" in reply
        await until(lambda: ("farmer-1", {"event": "pause"}) in fake_rasa.events)
        await until(lambda: "bot_paused" in case_events(settings))

        assert f"已接单 #{cid}" in await say(client, "c-kiwi", f"接 {cid}")
        assert "已发给农户" in await say(client, "c-kiwi", f"＃{cid} 先摘掉病叶")
        assert "已请农户评分" in await say(client, "c-kiwi", f"结 {cid} 已解决")
        assert "谢谢您的评分" in await say(client, "farmer-1", "5")
        assert len(fake_rasa.received) == 1  # nothing of the case went to Rasa
        # The farmer is back with the bot: resumed before their next message reaches Rasa.
        await say(client, "farmer-1", "猕猴桃褐斑病怎么治")
        assert fake_rasa.events[-1] == ("farmer-1", {"event": "resume"})
        assert len(fake_rasa.received) == 2
        await until(lambda: case_events(settings)[-1] == "bot_resumed")

        def check(s: Any) -> None:
            case = s.get(Case, cid)
            assert (case.status, case.rating) == ("closed", 5)
            pushes = list(
                s.execute(
                    select(OutboxItem.content).where(OutboxItem.openid == "farmer-1")
                ).scalars()
            )
            assert f"【专家回复 #{cid}】先摘掉病叶" in pushes and any("1～5" in p for p in pushes)
            sources = dict(
                s.execute(
                    select(Message.text, Message.source).where(Message.direction == "out")
                ).all()
            )
            assert "handoff:rated" in sources.values()
            assert "handoff:commissioner" in sources.values()

        in_db(settings, check)
    finally:
        await client.close()
