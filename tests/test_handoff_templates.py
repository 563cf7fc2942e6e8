"""Nothing dropped when WeChat's 48 h window is closed: template messages (payload, outbox, the
simulator), held replies shown when the farmer writes again, and admins pushed like commissioners.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import db, handoff, outbox, records, roster
from bot.access_token import AccessTokens, DbTokenBackend
from bot.app import create_app
from bot.console import pages
from bot.handoff import Actor
from bot.handoff_commands import route_farmer_message
from bot.handoff_models import Case, CaseEvent, Commissioner
from bot.handoff_push import outbox_sender, window_of
from bot.models import Message, OutboxItem
from bot.outbox import OutboxSender
from bot.records import InboundRecord
from bot.settings import Settings
from bot.sim_api import SIM
from bot.wechat_client import WeChatApi, template_payload
from tests.handoff_helpers import RecordingSender, data_key, seed_roster, sender, session
from tests.test_gateway import client_for
from tests.test_gateway_handoff import case_events, in_db, say

__all__ = ["data_key", "sender", "session"]  # fixtures

TEMPLATES = {"case": "tpl-case-1", "reply": "tpl-reply-1"}


def test_template_payload_has_wechat_shape() -> None:
    fields = {"first": "专家已回复您的求助#3", "keyword1": {"value": "#3", "color": "#173177"}}
    body = template_payload("o-1", "tpl-9", fields, "https://x/c/3")
    assert body == {
        "touser": "o-1",
        "template_id": "tpl-9",
        "data": {
            "first": {"value": "专家已回复您的求助#3"},
            "keyword1": {"value": "#3", "color": "#173177"},
        },
        "url": "https://x/c/3",
    }
    assert "url" not in template_payload("o-1", "tpl-9", {"first": "x"})


def test_settings_read_template_ids_with_dev_defaults_in_the_simulator() -> None:
    live = Settings.from_env(
        {
            "WECHAT_TOKEN": "t", "WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s",
            "WECHAT_TEMPLATE_CASE": "abc", "KTP_PUBLIC_URL": "https://ktp.example.cn/",
        },
        dotenv=None,
    )  # fmt: skip
    assert live.templates == {"case": "abc"}  # the reply template is not set: not invented
    assert live.public_base_url == "https://ktp.example.cn"
    sim = Settings.from_env({"KTP_SIMULATOR": "1"}, dotenv=None)
    assert set(sim.templates) == {"case", "reply"} and all(sim.templates.values())


async def _sim(settings: Settings, tmp_path: Path, **kw: Any) -> tuple[TestServer, OutboxSender]:
    server = TestServer(
        create_app(settings, media_dir=tmp_path), host="127.0.0.1", port=settings.port
    )
    await server.start_server()
    base = f"{settings.self_url}/sim/cgi-bin/"
    api = WeChatApi(aiohttp.ClientSession(), settings.app_id, settings.app_secret, base)
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    api.tokens = AccessTokens(DbTokenBackend(sessions, settings.app_id), api.fetch_token)
    return server, OutboxSender(sessions, api, base_backoff_s=0.01, **kw)


def _items(settings: Settings) -> list[OutboxItem]:
    return in_db(
        settings, lambda s: list(s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())
    )


async def test_template_goes_out_with_the_window_closed_and_does_not_use_the_quota(
    settings: Settings, tmp_path: Path
) -> None:
    server, sender = await _sim(settings, tmp_path, templates=TEMPLATES, public_url="https://k.cn")
    state = server.app[SIM]

    def queue(s: Session) -> None:
        outbox.enqueue_template(
            s,
            openid="c-late",
            template="case",
            data={"first": "新求助 #4"},
            path="/console/cases/4",
        )
        rec = InboundRecord("f-busy", f"k-{time.time()}", "text", records.utcnow())
        inbound = s.get(Message, records.record_exchange(s, rec, []))
        for n in range(5):
            outbox.enqueue(s, reply_to=inbound, content=f"第{n}条", source="t")
        outbox.enqueue_template(s, openid="f-busy", template="reply", data={"first": "专家已回复"})

    in_db(settings, queue)
    state.window["f-busy"] = (time.time(), 0)  # c-late never wrote: WeChat's window is closed
    try:
        await sender.run_once()
        await sender.run_once()
    finally:
        await sender._wechat._http.close()
        await server.close()
    (tpl,) = state.outbox["c-late"]
    assert tpl["msgtype"] == "template" and tpl["template_id"] == "tpl-case-1"
    assert tpl["data"]["first"] == {"value": "新求助 #4"}
    assert tpl["url"] == "https://k.cn/console/cases/4"
    busy = state.outbox["f-busy"]
    # Five texts (the quota) and the template on top; text pushes keep their contract format.
    assert [m["msgtype"] for m in busy] == ["text"] * 5 + ["template"]
    assert set(busy[0]) == {"msgtype", "content", "at"}
    assert [i.status for i in _items(settings)] == ["sent"] * 7
    assert in_db(settings, lambda s: window_of("f-busy", session=s).pushes_left) == 0


async def test_an_unconfigured_template_fails_at_once_with_the_reason(
    settings: Settings, tmp_path: Path
) -> None:
    server, sender = await _sim(settings, tmp_path, templates={"case": "tpl-case-1"})
    in_db(
        settings,
        lambda s: outbox.enqueue_template(s, openid="f-x", template="reply", data={"first": "x"}),
    )
    try:
        await sender.run_once()
    finally:
        await sender._wechat._http.close()
        await server.close()
    (item,) = _items(settings)
    assert item.status == "failed" and item.attempts == 1
    assert "WECHAT_TEMPLATE_REPLY" in (item.error or "")
    assert server.app[SIM].outbox == {}


def _person(session: Session, openid: str) -> Actor:
    found = roster.commissioner_by_openid(openid, session=session)
    assert found is not None
    return Actor.of_commissioner(found)


def _actions(session: Session, case_id: int) -> list[tuple[str, str | None]]:
    return [
        (ev.action, ev.detail)
        for ev in session.execute(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        ).scalars()
    ]


def test_a_new_case_for_a_commissioner_outside_the_window_goes_as_a_template(
    session: Session,
) -> None:
    seed_roster(session)
    closed = RecordingSender(refuse="window_closed")
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", symptoms="叶斑", sender=closed
    )
    session.commit()
    assert closed.sent == []
    ((openid, role, data, path),) = closed.templates
    assert (openid, role, path) == ("c-kiwi", "case", f"/console/cases/{case.id}")
    assert data["keyword1"] == f"#{case.id}" and f"接 {case.id}" in data["remark"]
    assert ("push_refused", "commissioner:1: window_closed，已改发模板消息") in _actions(
        session, case.id
    )


def test_a_held_reply_tells_the_farmer_once_and_reaches_them_when_they_write(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", sender=sender
    )
    kiwi = _person(session, "c-kiwi")
    handoff.claim(case.id, kiwi, session=session)
    farmer_gone = RecordingSender(refuse="window_closed", refuse_for={"farmer-1"})
    first = handoff.reply(case.id, kiwi, "先剪病叶", session=session, sender=farmer_gone)
    second = handoff.reply(case.id, kiwi, "再喷药", session=session, sender=farmer_gone)
    session.commit()
    assert (first.delivered, first.notified, second.notified) == (False, True, True)
    ((openid, role, data, _),) = farmer_gone.templates  # one template for both replies
    assert (openid, role) == ("farmer-1", "reply")
    assert data["first"] == f"专家已回复您的求助#{case.id}，回复任意内容查看"
    # The console says the replies wait for the farmer, and that they were told.
    html = pages.case_page(
        "u", "c",
        pages.CaseView(case.id, "已回复", [], list(case.transcript), [], [], "已关闭", False, True),
    )  # fmt: skip
    assert 'id="held"' in html and "有 2 条回复在等农户" in html and "已发模板消息通知农户" in html

    result = route_farmer_message("farmer-1", "看看", session=session, sender=sender)
    session.commit()
    assert result is not None and result.reply == (
        f"【专家回复 #{case.id}】先剪病叶\n\n【专家回复 #{case.id}】再喷药"
    )
    again = route_farmer_message("farmer-1", "好的", session=session, sender=sender)
    assert again is not None and again.reply == f"已转给专家（求助单 #{case.id}），请稍候。"
    assert ("reply_delivered", "2 条") in _actions(session, case.id)


def test_held_reply_and_rating_request_of_a_closed_case_reach_the_farmer(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", sender=sender
    )
    kiwi = _person(session, "c-kiwi")
    handoff.claim(case.id, kiwi, session=session)
    gone = RecordingSender(refuse="window_closed", refuse_for={"farmer-1"})
    handoff.reply(case.id, kiwi, "是褐斑病，喷代森锰锌", session=session, sender=gone)
    handoff.close(case.id, kiwi, "已指导用药", session=session, sender=gone)
    session.commit()
    assert ("push_refused", "farmer: window_closed，评分邀请待送达") in _actions(session, case.id)

    result = route_farmer_message("farmer-1", "在吗", session=session, sender=sender)
    session.commit()
    assert result is not None and (result.action, result.paused) == ("delivered", False)
    shown = result.reply or ""
    assert f"【专家回复 #{case.id}】是褐斑病，喷代森锰锌" in shown and "回复 1～5" in shown
    # Then the rating is taken as usual, and nothing is delivered twice.
    rated = route_farmer_message("farmer-1", "4", session=session, sender=sender)
    session.commit()
    assert rated is not None and rated.action == "rated" and case.rating == 4


def test_routing_to_an_admin_pushes_the_admins_of_the_county(session: Session) -> None:
    seed_roster(session)
    for c in session.execute(select(Commissioner)).scalars():
        c.on_duty = False
    roster.add_account(session=session, username="prov", password="pw-123456", role="admin",
                       wechat_openid="a-prov")  # fmt: skip
    roster.add_account(session=session, username="zz", password="pw-123456", role="admin",
                       county="周至县", wechat_openid="a-zz")  # fmt: skip
    roster.add_account(
        session=session, username="zz2", password="pw-123456", role="admin", county="周至县"
    )  # fmt: skip  (no WeChat: console only)
    session.commit()
    sender = RecordingSender(refuse="window_closed", refuse_for={"a-zz"})
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", sender=sender
    )
    session.commit()
    assert case.needs_admin
    # The county's admin, outside their window: a template pointing to the case; the
    # province-level admin is not bothered while the county has one.
    assert sender.sent == []
    ((openid, role, data, path),) = sender.templates
    assert (openid, role, path) == ("a-zz", "case", f"/console/cases/{case.id}")
    assert "无人可接" in data["first"]

    # Another county with no admin of its own: the province-level admin gets a text push.
    sender2 = RecordingSender()
    other = handoff.open_case(
        "farmer-2", session=session, crop="茶叶", county="平利县", sender=sender2
    )
    session.commit()
    ((openid, text, _),) = sender2.sent
    assert openid == "a-prov" and f"#{other.id}" in text and f"/console/cases/{other.id}" in text


def test_no_admin_on_wechat_is_recorded_not_silent(session: Session) -> None:
    sender = RecordingSender()
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", sender=sender
    )
    session.commit()
    assert case.needs_admin and sender.sent == [] and sender.templates == []
    assert ("push_refused", "没有绑定微信的管理员，只能在网页控制台看到") in _actions(
        session, case.id
    )


async def test_gateway_reply_to_a_farmer_gone_quiet_is_held_then_shown(settings: Settings) -> None:
    """Through the gateway with the real outbox sender: the farmer last wrote 49 h ago."""
    client = await client_for(settings)
    try:
        in_db(
            settings,
            lambda s: roster.add_commissioner(
                session=s, name="王猕", openid="c-kiwi", county="周至县",
                specialties=["猕猴桃"], on_duty=True,
            ),
        )  # fmt: skip
        assert "没有未结" in await say(client, "c-kiwi", "我的")  # opens the commissioner's window
        await say(client, "farmer-9", "猕猴桃叶子黄了")
        cid = in_db(
            settings,
            lambda s: (
                handoff.open_case(
                    "farmer-9", session=s, crop="猕猴桃", county="周至县", sender=outbox_sender
                ).id
            ),
        )

        def age(s: Session) -> None:
            old = records.utcnow() - timedelta(hours=49)
            s.execute(update(Message).where(Message.openid == "farmer-9").values(created_at=old))

        in_db(settings, age)
        assert f"已接单 #{cid}" in await say(client, "c-kiwi", f"接 {cid}")
        answer = await say(client, "c-kiwi", f"#{cid} 先摘掉病叶")
        assert "回复已保存" in answer and "模板消息" in answer

        def templates(s: Session) -> list[dict[str, Any]]:
            mine = (OutboxItem.openid == "farmer-9") & (OutboxItem.msgtype == "template")
            rows = s.execute(select(OutboxItem).where(mine)).scalars()
            return [json.loads(r.content) for r in rows]

        (tpl,) = in_db(settings, templates)
        assert tpl["template"] == "reply" and tpl["data"]["first"].startswith(
            f"专家已回复您的求助#{cid}"
        )
        assert "template_sent" in case_events(settings)
        shown = await say(client, "farmer-9", "什么回复")
        assert shown == f"【专家回复 #{cid}】先摘掉病叶"
        held = in_db(settings, lambda s: s.get(Case, cid).transcript)
        assert [e.get("delivery") for e in held if e.get("who", "").startswith("commissioner")] == [
            "passive"
        ]
    finally:
        await client.close()


async def test_a_reply_wechat_refuses_at_sending_is_held_on_the_case(
    settings: Settings, tmp_path: Path
) -> None:
    """Our record says the farmer's window is open, WeChat says 45015: the answer is not lost."""
    server, sender = await _sim(settings, tmp_path, templates=TEMPLATES)

    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as plain:
        seed_roster(plain)  # commits
    engine.dispose()

    def setup(s: Session) -> int:
        rec = InboundRecord("farmer-7", f"k-{time.time()}", "text", records.utcnow())
        records.record_exchange(s, rec, [])
        case = handoff.open_case("farmer-7", session=s, crop="猕猴桃", county="周至县")
        handoff.claim(case.id, _person(s, "c-kiwi"), session=s)
        out = handoff.reply(
            case.id, _person(s, "c-kiwi"), "挂防鸟网", session=s, sender=outbox_sender
        )
        assert out.delivered  # queued: the refusal comes from WeChat later
        return int(case.id)

    cid = in_db(settings, setup)
    try:
        await sender.run_once()  # WeChat refuses the text (the simulator never saw the farmer)
        await sender.run_once()  # the template goes out
    finally:
        await sender._wechat._http.close()
        await server.close()
    state = server.app[SIM]
    assert [m["msgtype"] for m in state.outbox["farmer-7"]] == ["template"]
    assert state.outbox["farmer-7"][0]["template_id"] == "tpl-reply-1"
    entry = in_db(settings, lambda s: s.get(Case, cid).transcript[-1])
    assert (entry["text"], entry["delivery"], entry["notified"]) == (
        "挂防鸟网",
        "window_closed",
        "template",
    )

    def next_message(s: Session) -> str | None:
        result = route_farmer_message("farmer-7", "在吗", session=s, sender=RecordingSender())
        assert result is not None
        return result.reply

    assert in_db(settings, next_message) == f"【专家回复 #{cid}】挂防鸟网"


def test_a_quiet_commissioner_gets_one_template_for_many_farmer_messages(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", sender=sender
    )
    handoff.claim(case.id, _person(session, "c-kiwi"), session=session)
    session.commit()
    quiet = RecordingSender(refuse="window_closed", refuse_for={"c-kiwi"})
    for text in ("叶子还在掉", "又黄了几片", "[图片]"):
        assert route_farmer_message("farmer-1", text, session=session, sender=quiet) is not None
        session.commit()
    assert [(o, role) for o, role, _, _ in quiet.templates] == [("c-kiwi", "case")]
    refused = [d for a, d in _actions(session, case.id) if a == "push_refused"]
    assert len(refused) == 3 and "已改发模板消息" in (refused[0] or "")
    assert all("等对方来消息" in (d or "") for d in refused[1:])
    # Once they write to the account, the next refusal may send a template again.
    rec = InboundRecord(
        "c-kiwi", f"k-{time.time()}", "text", records.utcnow() + timedelta(seconds=1)
    )
    records.record_exchange(session, rec, [])
    session.commit()
    route_farmer_message(
        "farmer-1",
        "还在吗",
        session=session,
        sender=quiet,
        now=records.utcnow() + timedelta(seconds=2),
    )
    assert len(quiet.templates) == 2
