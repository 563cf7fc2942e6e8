"""Commissioners' WeChat commands and farmers' messages during a case."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from bot import handoff
from bot.handoff_commands import (
    Command,
    handle_commissioner_text,
    parse_command,
    route_farmer_message,
)
from tests.handoff_helpers import RecordingSender, data_key, seed_roster, sender, session

__all__ = ["data_key", "sender", "session"]  # fixtures


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#12 先剪病叶", Command("reply", 12, "先剪病叶")),
        ("＃１２　先剪病叶", Command("reply", 12, "先剪病叶")),
        ("# 12：多喷两次", Command("reply", 12, "多喷两次")),
        ("#12", Command("reply", 12, "")),
        ("接 12", Command("claim", 12)),
        ("接12", Command("claim", 12)),
        ("接单 #12", Command("claim", 12)),
        ("claim 12", Command("claim", 12)),
        ("CLAIM 7", Command("claim", 7)),
        ("结 12 已解决", Command("close", 12, "已解决")),
        ("结案12", Command("close", 12, "")),
        ("访 12 明天上午", Command("visit", 12, "明天上午")),
        ("已访 12 看过了", Command("visited", 12, "看过了")),
        ("我的", Command("mine")),
        (" 我的 ", Command("mine")),
        ("帮助", Command("help")),
        ("猕猴桃叶子黄了", None),
        ("接下来怎么办", None),
        ("12 先剪病叶", None),
    ],
)
def test_parse_command(text: str, expected: Command | None) -> None:
    assert parse_command(text) == expected


def test_a_commissioner_works_a_case_from_wechat(session: Session, sender: RecordingSender) -> None:
    seed_roster(session)
    case = handoff.open_case(
        "farmer-1", session=session, crop="猕猴桃", county="周至县", symptoms="叶斑", sender=sender
    )
    session.commit()
    cid = case.id

    def say(text: str, openid: str = "c-kiwi") -> str | None:
        out = handle_commissioner_text(openid, text, session=session, sender=sender)
        session.commit()
        return out

    assert say("接 1", openid="farmer-1") is None  # not a commissioner: the bot handles it
    assert "已接单" in (say(f"接 {cid}") or "")
    assert "不能接单" in (say(f"接 {cid}", openid="c-fruit") or "")
    assert "已发给农户" in (say(f"＃{cid} 先剪除病叶") or "")
    assert sender.to("farmer-1")[-1] == f"【专家回复 #{cid}】先剪除病叶"
    assert f"#{cid} 已回复" in (say("我的") or "")
    assert "明天上午" in (say(f"访 {cid} 明天上午") or "")
    assert "已结案" in (say(f"结 {cid} 褐斑病已控制") or "")
    assert case.resolution == "褐斑病已控制" and case.status == "closed"
    assert "没有未结" in (say("我的") or "")
    assert "没有 #999" in (say("接 999") or "")
    assert "指令" in (say("随便说点什么") or "")


def test_farmer_messages_reach_the_commissioner_then_the_rating_is_stored(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    assert route_farmer_message("farmer-1", "你好", session=session) is None  # no case: the bot
    case = handoff.open_case("farmer-1", session=session, crop="猕猴桃", county="周至县")
    fwd = route_farmer_message(
        "farmer-1",
        "又多了几片",
        [{"kind": "image", "media_id": "m2"}],
        session=session,
        sender=sender,
    )
    assert fwd is not None and fwd.paused and fwd.forwarded_to == "c-kiwi"
    assert sender.to("c-kiwi")[-1] == f"#{case.id} 农户：又多了几片"
    assert case.media == [{"kind": "image", "media_id": "m2"}]
    kiwi = handoff.Actor.of_commissioner(case.offered_to)
    handoff.claim(case.id, kiwi, session=session)
    # The window is closed: the answer is held, then given with the farmer's next message.
    held = RecordingSender(refuse="window_closed")
    handoff.reply(case.id, kiwi, "剪掉病叶", session=session, sender=held)
    fwd = route_farmer_message("farmer-1", "专家在吗", session=session, sender=sender)
    assert fwd is not None and fwd.reply == f"【专家回复 #{case.id}】剪掉病叶"
    fwd = route_farmer_message("farmer-1", "好的", session=session, sender=sender)
    assert fwd is not None and "剪掉病叶" not in (fwd.reply or "")
    handoff.close(case.id, kiwi, "已解决", session=session, sender=sender)
    fwd = route_farmer_message("farmer-1", "５分", session=session, sender=sender)
    assert fwd is not None and fwd.action == "rated" and not fwd.paused
    assert case.rating == 5
    assert route_farmer_message("farmer-1", "4", session=session) is None  # rated once


def test_not_solved_reopens_the_case(session: Session, sender: RecordingSender) -> None:
    seed_roster(session)
    case = handoff.open_case("farmer-1", session=session, crop="猕猴桃", county="周至县")
    kiwi = handoff.Actor.of_commissioner(case.offered_to)
    handoff.claim(case.id, kiwi, session=session)
    handoff.close(case.id, kiwi, "已解决", session=session)
    fwd = route_farmer_message("farmer-1", "还是没解决", session=session, sender=sender)
    assert fwd is not None and fwd.action == "reopened" and case.status == "assigned"


def test_reply_text_reaches_the_farmer_exactly_as_typed() -> None:
    """Only the command word and number are read full-width-blind; the answer keeps its 「，；」."""
    from bot.handoff_commands import parse_command

    cmd = parse_command("＃１２　挂防鸟网，网眼2厘米；烂果深埋。")
    assert cmd is not None and (cmd.kind, cmd.case_id) == ("reply", 12)
    assert cmd.arg == "挂防鸟网，网眼2厘米；烂果深埋。"
