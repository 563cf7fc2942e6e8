"""Shared fixtures: settings, databases (SQLite and PostgreSQL) and a fake Rasa over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bot import db
from bot.settings import Settings
from bot.wechat import sign


def pytest_collection_finish(session: pytest.Session) -> None:
    """Run every test on asyncio's own event loop, as the gateway runs.

    Importing Rasa's NLU modules (tests/nlu/test_components.py) imports Sanic, which switches the
    process to uvloop's event loop policy; the outbox tests then failed in the full suite and
    passed alone. Collection is over here, so whatever a test module's imports did is undone."""
    asyncio.set_event_loop_policy(None)


PG_URL = os.environ.get("KTP_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
TOKEN = "test-token"


@pytest.fixture(autouse=True)
def _record_only_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never open cases in var/ketepai.db: actions' handoff back end is the
    record-only one unless a test installs another (tests/test_handoff_sink.py: the DB one)."""
    handoff = sys.modules.get("actions.handoff")
    if handoff is not None:
        monkeypatch.setattr(handoff, "_sink", handoff.RecordOnlySink())


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/ketepai.db"


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not _pg_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    schema = f"ktp_test_{uuid.uuid4().hex[:10]}"
    admin = db.make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """Both database back-ends, migrated to head."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url = str(request.getfixturevalue(name))
    db.upgrade(url)
    return url


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(any_db_url)
    yield eng
    eng.dispose()


@dataclass
class FakeRasa:
    """An HTTP stand-in for the Rasa server: REST webhook, tracker and status endpoints."""

    replies: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"recipient_id": "x", "text": "【猕猴桃 · 褐斑病】先摘病叶。"},
            {"recipient_id": "x", "custom": {"ketepai_source": "kb:kiwi-brown-spot"}},
        ]
    )
    intent: str = "ask_disease"
    confidence: float = 0.93
    entities: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"entity": "crop", "value": "猕猴桃", "start": 0, "end": 3, "extractor": "DIET"}
        ]
    )
    delay_s: float = 0.0
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (sender, event)
    token: str = "rasa-secret"
    # The consultation form's state as the tracker shows it (None: no form is running).
    active_loop: str | None = None
    requested_slot: str | None = None
    # Our input channel (bot/rasa_channel.py): answer + parse in one call. False: a Rasa without
    # it (404), so the gateway must use the REST channel and read the tracker.
    channel: bool = True
    tracker_reads: int = 0
    peers: list[Any] = field(default_factory=list)  # (host, port) of each channel request
    down: bool = False  # True: /status answers 503 as well (Rasa not up)

    def app(self) -> web.Application:
        async def webhook(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.received.append(body)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.status != 200:
                return web.Response(status=self.status)
            return web.json_response([{**r, "recipient_id": body["sender"]} for r in self.replies])

        async def channel(request: web.Request) -> web.StreamResponse:
            if not self.channel:
                return web.Response(status=404)
            body = await request.json()
            self.received.append(body)
            if request.transport is not None:
                self.peers.append(request.transport.get_extra_info("peername"))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.status != 200:
                return web.Response(status=self.status)
            parse = {
                "intent": {"name": self.intent, "confidence": self.confidence},
                "entities": self.entities,
            }
            messages = [{**r, "recipient_id": body["sender"]} for r in self.replies]
            return web.json_response({"messages": messages, "parse": parse, "error": None})

        async def tracker(request: web.Request) -> web.StreamResponse:
            if request.query.get("token") != self.token:
                return web.Response(status=401)
            self.tracker_reads += 1
            latest = {
                "text": self.received[-1]["message"] if self.received else None,
                "intent": {"name": self.intent, "confidence": self.confidence},
                "entities": self.entities,
            }
            return web.json_response(
                {
                    "sender_id": request.match_info["sender"],
                    "latest_message": latest,
                    "active_loop": {"name": self.active_loop} if self.active_loop else {},
                    "slots": {"requested_slot": self.requested_slot},
                }
            )

        async def status(request: web.Request) -> web.StreamResponse:
            if request.query.get("token") != self.token:
                return web.Response(status=401)
            if self.down:
                return web.Response(status=503)
            return web.json_response({"model_file": "models/test.tar.gz"})

        async def add_event(request: web.Request) -> web.StreamResponse:
            if request.query.get("token") != self.token:
                return web.Response(status=401)
            self.events.append((request.match_info["sender"], await request.json()))
            return web.json_response({"sender_id": request.match_info["sender"]})

        app = web.Application()
        app.router.add_post("/conversations/{sender}/tracker/events", add_event)
        app.router.add_post("/webhooks/rest/webhook", webhook)
        app.router.add_post("/webhooks/ketepai/webhook", channel)
        app.router.add_get("/conversations/{sender}/tracker", tracker)
        app.router.add_get("/status", status)
        return app


@pytest.fixture
def fake_rasa() -> FakeRasa:
    return FakeRasa()


@pytest.fixture
async def rasa_server(fake_rasa: FakeRasa) -> Any:
    server = TestServer(fake_rasa.app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def settings(sqlite_url: str, rasa_server: TestServer, fake_rasa: FakeRasa) -> Settings:
    """Gateway settings pointing at the fake Rasa and a fresh SQLite database."""
    return Settings(
        port=free_port(),
        rasa_port=int(rasa_server.port or 0),
        action_port=free_port(),
        database_url=sqlite_url,
        simulator=True,
        wechat_token=TOKEN,
        rasa_token=fake_rasa.token,
        reply_budget_s=1.0,
    )


def signed_params(token: str = TOKEN, timestamp: int | None = None, nonce: str = "n0nce") -> dict:
    """Query parameters of a request signed as WeChat signs it."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce}


def text_xml(
    openid: str, content: str, msg_id: int = 1234567890123456, create: int = 1700000000
) -> str:
    """A WeChat text message, as WeChat POSTs it."""
    return (
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
