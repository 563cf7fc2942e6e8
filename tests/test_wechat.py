"""WeChat protocol helpers: signatures (known answers), parsing, replies and safe mode."""

from __future__ import annotations

import hashlib

import pytest
import xmltodict

from bot.wechat import (
    BadRequest,
    Forbidden,
    SafeMode,
    check_signature,
    parse_inbound,
    render_text_reply,
    sign,
)
from tests.conftest import text_xml

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_signature_known_answer() -> None:
    # sha1("".join(sorted(["token", "1409304348", "xxxxxx"]))) computed independently.
    expected = hashlib.sha1(b"1409304348tokenxxxxxx").hexdigest()
    assert sign("token", "1409304348", "xxxxxx") == expected


def test_check_signature_accepts_good_and_refuses_bad_missing_and_stale() -> None:
    good = sign("tok", "1700000000", "n")
    check_signature("tok", good, "1700000000", "n", replay_window_s=300, now=1700000100)
    with pytest.raises(Forbidden, match="bad signature"):
        check_signature("tok", good[:-1] + "0", "1700000000", "n")
    with pytest.raises(Forbidden, match="missing"):
        check_signature("tok", None, "1700000000", "n")
    with pytest.raises(Forbidden, match="stale"):
        check_signature("tok", good, "1700000000", "n", replay_window_s=300, now=1700000301)


def test_parse_text_message() -> None:
    msg = parse_inbound(text_xml("o-farmer", "洋芋叶子黑了", msg_id=99, create=1700000005))
    assert (msg.openid, msg.msg_type, msg.text, msg.msg_id) == (
        "o-farmer",
        "text",
        "洋芋叶子黑了",
        "99",
    )
    assert msg.dedupe_key == "99" and msg.create_time == 1700000005


def test_parse_voice_uses_recognition_when_present() -> None:
    xml = (
        "<xml><ToUserName>gh</ToUserName><FromUserName>f</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format>"
        "<Recognition>玉米生虫了</Recognition><MsgId>5</MsgId></xml>"
    )
    assert parse_inbound(xml).text == "玉米生虫了"
    no_rec = xml.replace("<Recognition>玉米生虫了</Recognition>", "")
    assert parse_inbound(no_rec).text is None


@pytest.mark.parametrize(
    "body",
    [
        "<xml><Content>unclosed",
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>',
        "<xml><MsgType>text</MsgType></xml>",
        "x" * (65 * 1024),
    ],
)
def test_bad_bodies_are_bad_requests(body: str) -> None:
    with pytest.raises(BadRequest):
        parse_inbound(body)


def test_text_reply_addresses_the_farmer() -> None:
    msg = parse_inbound(text_xml("o-farmer", "你好"))
    reply = xmltodict.parse(render_text_reply(msg, "您好 <3 & 欢迎"))["xml"]
    assert (reply["ToUserName"], reply["FromUserName"]) == ("o-farmer", "gh_test")
    assert reply["Content"] == "您好 <3 & 欢迎"


def test_safe_mode_round_trip_and_bad_msg_signature() -> None:
    safe = SafeMode("tok", AES_KEY, "wxappid")
    envelope = safe.encrypt(text_xml("o-aes", "茶树"), "nonce1", "1700000000")
    msg_sig = xmltodict.parse(envelope)["xml"]["MsgSignature"]
    plain = safe.decrypt(envelope.encode(), msg_sig, "1700000000", "nonce1")
    assert parse_inbound(plain).text == "茶树"
    with pytest.raises(Forbidden):
        safe.decrypt(envelope.encode(), "0" * 40, "1700000000", "nonce1")
    with pytest.raises(BadRequest):
        safe.decrypt(b"<xml><NoEncrypt/></xml>", msg_sig, "1700000000", "nonce1")
