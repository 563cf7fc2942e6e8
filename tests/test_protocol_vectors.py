"""Known-answer vectors: every message type, plaintext and safe mode, inbound and reply.

Token, EncodingAESKey and AppID are Tencent's published sample values; the official sample
envelope decrypts to its published plaintext. Encryption is made repeatable by fixing the
16-byte random prefix; the frozen envelopes are also checked independently (wechatpy decrypts
them, hashlib recomputes msg_signature).
"""

from __future__ import annotations

import hashlib

import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.replies import NON_TEXT_REPLIES, OTHER_REPLY, SCAN_BACK, WELCOME, canned_reply
from bot.wechat import SafeMode, parse_inbound, render_text_reply

TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
APP_ID = "wx5823bf96d3bd56c7"
TIMESTAMP, NONCE, PREFIX = "1409659813", "1372623149", "0123456789abcdef"
HEAD = (
    "<xml><ToUserName><![CDATA[gh_ktp]]></ToUserName>"
    "<FromUserName><![CDATA[o_farmer]]></FromUserName><CreateTime>1700000000</CreateTime>"
)
REPLY = (
    "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{content}]]></Content>\n"
    "<FromUserName><![CDATA[gh_ktp]]></FromUserName>\n"
    "<ToUserName><![CDATA[o_farmer]]></ToUserName>\n<CreateTime>1700000001</CreateTime>\n</xml>"
)

# name: (body after HEAD, msg_type, text for Rasa, note for the record, media_id, dedupe key,
#        canned reply or None when Rasa answers)
CASES: dict[str, tuple[str, str, str | None, str | None, str | None, str, str | None]] = {
    "text": (
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[猕猴桃叶子发黄]]></Content>"
        "<MsgId>1001</MsgId></xml>",
        "text", "猕猴桃叶子发黄", None, None, "1001", None,
    ),
    "voice_recognised": (
        "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[v1]]></MediaId>"
        "<Format><![CDATA[amr]]></Format><Recognition><![CDATA[玉米生虫了]]></Recognition>"
        "<MsgId>1002</MsgId></xml>",
        "voice", "玉米生虫了", None, "v1", "1002", None,
    ),
    "voice_unrecognised": (
        "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[v2]]></MediaId>"
        "<Format><![CDATA[amr]]></Format><MsgId>1003</MsgId></xml>",
        "voice", None, None, "v2", "1003", NON_TEXT_REPLIES["voice"],
    ),
    "image": (
        "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz/x]]></PicUrl>"
        "<MediaId><![CDATA[i1]]></MediaId><MsgId>1004</MsgId></xml>",
        "image", None, None, "i1", "1004", NON_TEXT_REPLIES["image"],
    ),
    "location": (
        "<MsgType><![CDATA[location]]></MsgType><Location_X>34.160271</Location_X>"
        "<Location_Y>108.216911</Location_Y><Scale>15</Scale>"
        "<Label><![CDATA[陕西省西安市周至县楼观镇周一村3组]]></Label><MsgId>1005</MsgId></xml>",
        "location", None, "位置：陕西省西安市周至县楼观镇（约 34.2, 108.2）", None, "1005",
        NON_TEXT_REPLIES["location"],
    ),
    "link": (
        "<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[溃疡病]]></Title>"
        "<Description><![CDATA[]]></Description><Url><![CDATA[http://x.cn/a]]></Url>"
        "<MsgId>1006</MsgId></xml>",
        "link", None, "链接：溃疡病 http://x.cn/a", None, "1006", NON_TEXT_REPLIES["link"],
    ),
    "video": (
        "<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[m3]]></MediaId>"
        "<ThumbMediaId><![CDATA[t3]]></ThumbMediaId><MsgId>1007</MsgId></xml>",
        "video", None, None, "m3", "1007", NON_TEXT_REPLIES["video"],
    ),
    "shortvideo": (
        "<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[m4]]></MediaId>"
        "<ThumbMediaId><![CDATA[t4]]></ThumbMediaId><MsgId>1008</MsgId></xml>",
        "shortvideo", None, None, "m4", "1008", NON_TEXT_REPLIES["shortvideo"],
    ),
    "subscribe": (
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>",
        "event:subscribe", None, None, None, "o_farmer:1700000000", WELCOME,
    ),
    "unsubscribe": (
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>",
        "event:unsubscribe", None, None, None, "o_farmer:1700000000", "",
    ),
    "click_faq": (
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event>"
        "<EventKey><![CDATA[KTP_ASK_EXPERT]]></EventKey></xml>",
        "event:click", None, None, None, "o_farmer:1700000000", None,
    ),
    "view": (
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event>"
        "<EventKey><![CDATA[http://x.cn]]></EventKey></xml>",
        "event:view", None, None, None, "o_farmer:1700000000", "",
    ),
    "scan": (
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event>"
        "<EventKey><![CDATA[123]]></EventKey><Ticket><![CDATA[T]]></Ticket></xml>",
        "event:scan", None, None, None, "o_farmer:1700000000", SCAN_BACK,
    ),
    "unknown": (
        "<MsgType><![CDATA[miniprogrampage]]></MsgType><MsgId>1009</MsgId></xml>",
        "miniprogrampage", None, None, None, "1009", OTHER_REPLY,
    ),
}  # fmt: skip

# sha256 of the exact safe-mode envelopes (inbound, reply) with PREFIX as the random bytes.
FROZEN: dict[str, tuple[str, str]] = {
    "click_faq": ("1dec637d9c326d12", "00d165c66072fbf7"),
    "image": ("5568a96cad593ff1", "00d165c66072fbf7"),
    "link": ("b12ed4fc7168075a", "00d165c66072fbf7"),
    "location": ("436f3816662cfcf6", "00d165c66072fbf7"),
    "scan": ("ee1ea67bd0304d5b", "00d165c66072fbf7"),
    "shortvideo": ("c0d9d070101e91f6", "00d165c66072fbf7"),
    "subscribe": ("6c931ef24feb8881", "00d165c66072fbf7"),
    "text": ("f6dcb7673b1bcc48", "00d165c66072fbf7"),
    "unknown": ("7579113e0c4c67a1", "00d165c66072fbf7"),
    "unsubscribe": ("33842d69e1fdce16", "00d165c66072fbf7"),
    "video": ("9c651996e6cd4356", "00d165c66072fbf7"),
    "view": ("b780c8b7e95e747d", "00d165c66072fbf7"),
    "voice_recognised": ("5b45f7e6756ed99e", "00d165c66072fbf7"),
    "voice_unrecognised": ("e39792772e27001e", "00d165c66072fbf7"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plaintext_parse_and_exact_reply(name: str) -> None:
    body, msg_type, text, note, media_id, key, canned = CASES[name]
    inbound = parse_inbound(HEAD + body)
    assert (inbound.openid, inbound.msg_type, inbound.text) == ("o_farmer", msg_type, text)
    assert (inbound.note, inbound.media_id, inbound.dedupe_key) == (note, media_id, key)
    if name == "click_faq":
        assert inbound.event_key == "KTP_ASK_EXPERT"
        canned = canned_reply(inbound)
        assert canned and "转人工" in canned
    elif canned is not None:
        assert canned_reply(inbound) == canned
    content = canned or "【猕猴桃 · 黄化】"
    assert render_text_reply(inbound, content, 1700000001) == REPLY.format(content=content)


def _independent_check(envelope: str, plain: str) -> None:
    doc = xmltodict.parse(envelope)["xml"]
    expected_sig = hashlib.sha1(
        "".join(sorted([TOKEN, doc["TimeStamp"], doc["Nonce"], doc["Encrypt"]])).encode()
    ).hexdigest()
    assert doc["MsgSignature"] == expected_sig
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    assert crypto.decrypt_message(envelope, expected_sig, doc["TimeStamp"], doc["Nonce"]) == plain


@pytest.mark.parametrize("name", sorted(CASES))
def test_safe_mode_exact_envelopes(name: str) -> None:
    body, msg_type, *_rest = CASES[name]
    safe = SafeMode(TOKEN, AES_KEY, APP_ID)
    inbound_xml = HEAD + body
    envelope = safe.encrypt(inbound_xml, NONCE, TIMESTAMP, random_prefix=PREFIX)
    _independent_check(envelope, inbound_xml)
    sig = xmltodict.parse(envelope)["xml"]["MsgSignature"]
    inbound = parse_inbound(safe.decrypt(envelope.encode(), sig, TIMESTAMP, NONCE))
    assert inbound.msg_type == msg_type
    reply_xml = render_text_reply(inbound, "收到", 1700000001)
    reply = safe.encrypt(reply_xml, NONCE, TIMESTAMP, random_prefix=PREFIX)
    _independent_check(reply, reply_xml)
    digests = (
        hashlib.sha256(envelope.encode()).hexdigest()[:16],
        hashlib.sha256(reply.encode()).hexdigest()[:16],
    )
    assert digests == FROZEN[name]


def test_official_tencent_sample_decrypts() -> None:
    encrypted = (
        "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCU"
        "pj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4X"
        "gpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+"
        "KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4"
        "XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPI"
        "GHBZZIs2pDBS8R07+qN+E7Q=="
    )
    body = (
        f"<xml><ToUserName><![CDATA[{APP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    ).encode()
    safe = SafeMode(TOKEN, AES_KEY, APP_ID)
    plain = safe.decrypt(body, "477715d11cdb4164915debcba66cb864d751f3e6", TIMESTAMP, NONCE)
    inbound = parse_inbound(plain)
    assert (inbound.openid, inbound.text, inbound.msg_id) == (
        "mycreate",
        "hello",
        "4561255354251345929",
    )
