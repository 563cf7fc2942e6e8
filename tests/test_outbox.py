"""The durable outbox and the shared access_token against the simulator's WeChat API."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from bot import db, outbox, records
from bot.access_token import AccessTokens, DbTokenBackend, RedisTokenBackend
from bot.app import create_app
from bot.models import Message, OutboxItem
from bot.outbox import OutboxSender
from bot.records import InboundRecord
from bot.settings import Settings
from bot.sim_api import SIM
from bot.wechat_client import WeChatApi


async def _setup(settings: Settings, tmp_path: Path) -> tuple[TestServer, WeChatApi, OutboxSender]:
    app = create_app(settings, media_dir=tmp_path)
    server = TestServer(app, host="127.0.0.1", port=settings.port)
    await server.start_server()
    http = aiohttp.ClientSession()
    api = WeChatApi(http, settings.app_id, settings.app_secret, f"{settings.self_url}/sim/cgi-bin/")
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    api.tokens = AccessTokens(DbTokenBackend(sessions, settings.app_id), api.fetch_token)
    return server, api, OutboxSender(sessions, api, base_backoff_s=0.01)


def _queue(settings: Settings, openid: str, texts: list[str]) -> None:
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    with sessions() as session, session.begin():
        rec = InboundRecord(openid, f"k-{openid}-{time.time()}", "text", records.utcnow())
        inbound = session.get(Message, records.record_exchange(session, rec, []))
        assert inbound is not None
        for text in texts:
            outbox.enqueue(session, reply_to=inbound, content=text, source="commissioner")


def _items(settings: Settings) -> list[OutboxItem]:
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    with sessions() as session:
        return list(session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())


async def test_quota_of_five_then_45047_recorded_not_retried(
    settings: Settings, tmp_path: Path
) -> None:
    server, api, sender = await _setup(settings, tmp_path)
    state = server.app[SIM]
    state.window["f-q"] = (time.time(), 0)  # the farmer just wrote (WeChat's view)
    _queue(settings, "f-q", [f"第{n}条" for n in range(7)])
    try:
        assert await sender.run_once() == 7
        assert await sender.run_once() == 0  # nothing left to retry
    finally:
        await api._http.close()
        await server.close()
    assert [m["content"] for m in state.outbox["f-q"]] == [f"第{n}条" for n in range(5)]
    items = _items(settings)
    assert [i.status for i in items] == ["sent"] * 5 + ["quota"] * 2
    assert items[-1].errcode == 45047 and items[-1].attempts == 1


async def test_closed_window_45015_from_wechat_is_final(settings: Settings, tmp_path: Path) -> None:
    server, api, sender = await _setup(settings, tmp_path)
    _queue(settings, "f-w", ["晚到的答复"])  # our record says the farmer wrote; WeChat disagrees
    try:
        await sender.run_once()
        await sender.run_once()
    finally:
        await api._http.close()
        await server.close()
    (item,) = _items(settings)
    assert (item.status, item.errcode, item.attempts) == ("expired", 45015, 1)
    assert server.app[SIM].refused[0]["errcode"] == 45015


async def test_window_checked_locally_from_the_record(settings: Settings, tmp_path: Path) -> None:
    server, api, sender = await _setup(settings, tmp_path)
    _queue(settings, "f-old", ["两天后的答复"])
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    with sessions() as session, session.begin():
        old = records.utcnow() - timedelta(hours=49)
        session.execute(update(Message).where(Message.direction == "in").values(created_at=old))
    try:
        await sender.run_once()
    finally:
        await api._http.close()
        await server.close()
    (item,) = _items(settings)
    assert (item.status, item.errcode) == ("expired", 45015)
    assert server.app[SIM].calls == []  # refused before calling WeChat


async def test_unreachable_wechat_is_retried_with_backoff_in_order(
    settings: Settings, tmp_path: Path
) -> None:
    server, api, sender = await _setup(settings, tmp_path)
    server.app[SIM].window["f-r"] = (time.time(), 0)
    _queue(settings, "f-r", ["一", "二"])
    api._base = "http://127.0.0.1:9/cgi-bin/"  # nothing listens on the discard port
    try:
        await sender.run_once()
        first, second = _items(settings)
        assert (first.status, first.attempts, second.attempts) == ("pending", 1, 0)
        api._base = f"{settings.self_url}/sim/cgi-bin/"
        await asyncio.sleep(0.05)
        await sender.run_once()
    finally:
        await api._http.close()
        await server.close()
    assert [m["content"] for m in server.app[SIM].outbox["f-r"]] == ["一", "二"]
    assert [i.status for i in _items(settings)] == ["sent", "sent"]


async def test_bad_token_triggers_exactly_one_refresh(settings: Settings, tmp_path: Path) -> None:
    server, api, _sender = await _setup(settings, tmp_path)
    state = server.app[SIM]
    # A second "process" shares the database store.
    other = WeChatApi(api._http, settings.app_id, settings.app_secret, api._base)
    sessions = db.make_sessionmaker(db.make_engine(settings.database_url))
    other.tokens = AccessTokens(DbTokenBackend(sessions, settings.app_id), other.fetch_token)
    for openid in ("a", "b", "c", "d"):
        state.window[openid] = (time.time(), 0)
    try:
        await api.send_text("a", "x")
        await other.send_text("b", "x")
        assert state.token_fetches == 1  # the second process reused the stored token
        state.token = "revoked-elsewhere"  # e.g. someone fetched a token by hand
        await asyncio.gather(*(api.send_text(o, "y") for o in "abcd"), other.send_text("a", "z"))
    finally:
        await api._http.close()
        await server.close()
    assert state.token_fetches == 2
    assert len(state.outbox["a"]) == 3


async def test_redis_token_store_is_shared(settings: Settings) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url("redis://127.0.0.1:6379/15")
    try:
        await client.ping()
    except Exception:
        import pytest

        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    calls = 0

    async def fetch() -> tuple[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return f"tok{calls}", 7200

    app_id = f"wx-test-{time.time()}"
    one = AccessTokens(RedisTokenBackend(client, app_id), fetch)
    two = AccessTokens(RedisTokenBackend(client, app_id), fetch)
    try:
        assert await asyncio.gather(one.get(), two.get()) == ["tok1", "tok1"]
        assert await asyncio.gather(one.invalidate("tok1"), two.invalidate("tok1")) == [
            "tok2",
            "tok2",
        ]
    finally:
        await client.delete(f"ktp:wechat:access_token:{app_id}")
        await client.close()
    assert calls == 2
