"""Fuzzing POST /wechat with hypothesis: XML structure, encodings, sizes, signatures, message
types, plaintext and safe mode. Nothing crashes (no 5xx), every answer is 200/400/403/413 as the
request deserves, and nothing is half-written (every recorded inbound message has its reply)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xmltodict
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased

from bot import db
from bot.app import create_app
from bot.models import Message
from bot.settings import Settings
from bot.wechat import MAX_BODY_BYTES, SafeMode, sign
from tests.conftest import FakeRasa, free_port

TOKEN = "fuzz-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TYPES = ["text", "image", "voice", "location", "link", "video", "shortvideo", "event", "weird", ""]
EVENTS = ["subscribe", "unsubscribe", "CLICK", "VIEW", "SCAN", "LOCATION", "nonsense"]
FIELDS = ["Content", "MediaId", "Recognition", "Format", "Location_X", "Location_Y",
          "Scale", "Label", "Title", "Description", "Url", "PicUrl", "Event", "EventKey",
          "Ticket"]  # fmt: skip
text_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="猕猴桃白菜玉米<>&]]>\x00\r\n 　", max_size=60),
    st.sampled_from(EVENTS),
    st.integers().map(str),
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A WeChat-like message dict, some fields missing or odd."""
    msg: dict[str, Any] = {
        "ToUserName": draw(st.sampled_from(["gh_fuzz", ""])),
        "FromUserName": draw(st.one_of(st.just("fuzz-farmer"), st.text(max_size=70))),
        "CreateTime": draw(st.one_of(st.integers(0, 2**34).map(str), st.text(max_size=5))),
        "MsgType": draw(st.sampled_from(TYPES)),
        "MsgId": draw(st.one_of(st.integers(0, 2**64).map(str), st.just(""))),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        msg[name] = draw(text_values)
    for name in draw(st.lists(st.sampled_from(list(msg)), max_size=2, unique=True)):
        msg.pop(name)
    return msg


def _xml(msg: dict[str, Any]) -> str:
    try:
        return str(xmltodict.unparse({"xml": msg}, full_document=False))
    except ValueError:  # characters XML cannot carry: send them raw, like a broken client
        return "<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in msg.items()) + "</xml>"


bodies = st.one_of(
    messages().map(_xml),
    st.text(max_size=200),
    st.sampled_from([
        "", "<xml>", "<xml></xml>", "<xml><MsgType>text</MsgType></xml>",
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml>&e;</xml>',
        "<xml>" + "<a>" * 2000 + "</a>" * 2000 + "</xml>",
    ]),
)  # fmt: skip
encodings = st.sampled_from(["utf-8", "gbk", "utf-16", "latin-1"])
signatures = st.sampled_from(["good", "good", "good", "bad", "missing", "stale"])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One plaintext and one safe-mode gateway on SQLite, with a fake Rasa."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    fake = FakeRasa()
    rasa = TestServer(fake.app(), host="127.0.0.1", port=free_port())
    loop.run_until_complete(rasa.start_server())
    clients = {}
    for mode in ("plain", "aes"):
        s = Settings(
            port=free_port(),
            rasa_port=int(rasa.port or 0),
            action_port=free_port(),
            database_url=f"sqlite:///{tmp}/{mode}.db",
            simulator=True,
            wechat_token=TOKEN,
            rasa_token=fake.token,
            encoding_aes_key=AES_KEY if mode == "aes" else None,
            reply_budget_s=1.0,
        )
        client = TestClient(TestServer(create_app(s, media_dir=tmp / "media"), port=s.port))
        loop.run_until_complete(client.start_server())
        clients[mode] = (client, s)
    yield {"loop": loop, "clients": clients}
    for client, _ in clients.values():
        loop.run_until_complete(client.close())
    loop.run_until_complete(rasa.close())
    loop.close()


def _params(sig: str) -> tuple[dict[str, str], str, str]:
    ts = str(int(time.time()) - (10_000 if sig == "stale" else 0))
    nonce = "fuzznonce"
    params = {"timestamp": ts, "nonce": nonce}
    if sig != "missing":
        params["signature"] = sign(TOKEN, ts, nonce) if sig != "bad" else "0" * 40
    return params, ts, nonce


def _post(gw: dict[str, Any], mode: str, body: bytes, params: dict[str, str]) -> tuple[int, str]:
    client = gw["clients"][mode][0]

    async def go() -> tuple[int, str]:
        async with client.post("/wechat", params=params, data=body) as resp:
            return resp.status, await resp.text()

    return gw["loop"].run_until_complete(go())  # type: ignore[no-any-return]


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@FUZZ
@given(body=bodies, encoding=encodings, sig=signatures, pad=st.sampled_from([0, 0, 0, 70_000]))
def test_plaintext_webhook_never_crashes(
    gateway: dict[str, Any], body: str, encoding: str, sig: str, pad: int
) -> None:
    raw = body.encode(encoding, errors="replace") + b" " * pad
    params, _, _ = _params(sig)
    status, _ = _post(gateway, "plain", raw, params)
    if sig != "good":
        assert status == 403
    elif len(raw) > MAX_BODY_BYTES:
        assert status == 413
    else:
        assert status in {200, 400}


@FUZZ
@given(msg=messages(), sig=signatures, tamper=st.sampled_from(["none", "none", "sig", "body"]))
def test_safe_mode_webhook_never_crashes(
    gateway: dict[str, Any], msg: dict[str, Any], sig: str, tamper: str
) -> None:
    params, ts, nonce = _params(sig)
    safe = SafeMode(TOKEN, AES_KEY, gateway["clients"]["aes"][1].app_id)
    envelope = xmltodict.parse(safe.encrypt(_xml(msg), nonce, ts))["xml"]
    encrypt = envelope["Encrypt"] if tamper != "body" else envelope["Encrypt"][:-8] + "AAAAAAA="
    params = {**params, "encrypt_type": "aes", "msg_signature": envelope["MsgSignature"]}
    if tamper == "sig":
        params["msg_signature"] = "f" * 40
    body = f"<xml><ToUserName>gh_fuzz</ToUserName><Encrypt>{encrypt}</Encrypt></xml>".encode()
    status, _ = _post(gateway, "aes", body, params)
    if sig != "good" or tamper != "none":
        assert status in {400, 403}
    else:
        assert status in {200, 400}


def test_nothing_is_half_written(gateway: dict[str, Any]) -> None:
    """Every recorded message (events aside: some get no reply by design) has its reply, and
    every reply its message: each exchange is one transaction."""
    reply = aliased(Message)
    for _, s in gateway["clients"].values():
        engine = db.make_engine(s.database_url)
        with db.make_sessionmaker(engine)() as session:
            inbound = session.execute(
                select(func.count()).select_from(Message).where(Message.direction == "in")
            ).scalar_one()
            unanswered = session.execute(
                select(Message.id, Message.msg_type, Message.status).where(
                    Message.direction == "in",
                    ~Message.msg_type.startswith("event"),
                    ~exists().where(reply.reply_to_id == Message.id),
                )
            ).all()
            orphans = session.execute(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == "out", Message.reply_to_id.is_(None))
            ).scalar_one()
        engine.dispose()
        assert inbound > 0 and unanswered == [] and orphans == 0
