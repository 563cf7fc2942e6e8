"""The gateway's own recovery: spooled messages while the database is down, failed answers asked
again, claims of dead workers taken over, ticket order and rate limit in Redis, /metrics."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import db
from bot.models import Message, OutboxItem
from bot.replies import APOLOGY
from bot.settings import Settings
from tests.conftest import FakeRasa, signed_params, text_xml
from tests.test_gateway import client_for


async def _wait(check: Any, timeout_s: float = 15.0) -> bool:
    for _ in range(int(timeout_s / 0.2)):
        if check():
            return True
        await asyncio.sleep(0.2)
    return False


def _rows(settings: Settings) -> list[Message]:
    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        rows = list(session.execute(select(Message).order_by(Message.id)).scalars())
    engine.dispose()
    return rows


def _sent(settings: Settings, statuses: tuple[str, ...] = ("sent",)) -> int:
    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        query = select(OutboxItem).where(OutboxItem.status.in_(statuses))
        n = len(list(session.execute(query)))
    engine.dispose()
    return n


async def test_failed_answer_is_asked_again_and_pushed(
    settings: Settings, fake_rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTP_RECOVER_FAILED_S", "0.1")
    fake_rasa.status = 500
    client = await client_for(settings)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=text_xml("f1", "猕猴桃"))
        assert APOLOGY in await resp.text()
        fake_rasa.status = 200
        assert await _wait(lambda: _sent(settings) == 1)
    finally:
        await client.close()
    inbound, apology, push = _rows(settings)
    assert inbound.status == "retried" and inbound.intent == "ask_disease"
    assert apology.text == APOLOGY and push.channel == "push" and "猕猴桃" in push.text


async def test_spooled_message_is_recorded_and_answered_when_the_db_returns(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import resilience

    monkeypatch.setenv("KTP_SPOOL_DIR", str(tmp_path / "spool"))
    client = await client_for(settings)
    try:
        spool = resilience.Spool(tmp_path / "spool")
        from bot.wechat import parse_inbound

        body = text_xml("f2", "猕猴桃叶子有斑", msg_id=42, create=int(time.time())).encode()
        spool.put(parse_inbound(body), body)
        # Queued (the simulator refuses it: it never saw the farmer write through /wechat).
        assert await _wait(lambda: _sent(settings, ("sent", "expired", "pending")) == 1)
    finally:
        await client.close()
    inbound, ack, push = _rows(settings)
    assert inbound.dedupe_key == "42" and ack.text == resilience.ACK_SPOOLED
    assert push.channel == "push" and not list((tmp_path / "spool").iterdir())


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
async def redis() -> Any:
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail("Redis is not reachable on 127.0.0.1:6379 and CI is set")
        pytest.skip("Redis not reachable")
    import redis.asyncio as aioredis

    client = aioredis.from_url("redis://127.0.0.1:6379/13")
    yield client
    await client.close()


async def test_claim_of_a_dead_worker_is_taken_over(redis: Any) -> None:
    from bot.dedupe import RedisClaims

    key = f"dead-{id(redis)}-{asyncio.get_running_loop().time()}"
    dead, alive = RedisClaims(redis), RedisClaims(redis)
    await dead.beat()
    assert await dead.claim(key)
    assert not await alive.claim(key)  # the holder is alive
    await redis.delete(f"ktp:alive:{dead._me}")  # it was killed: no more heartbeats
    assert await alive.claim(key) and alive.takeovers == 1


async def test_one_farmers_turns_run_in_ticket_order_across_lanes(redis: Any) -> None:
    from bot.lanes import RedisLanes

    openid = f"order-{asyncio.get_running_loop().time()}"
    a, b = RedisLanes(redis), RedisLanes(redis)  # two "processes"
    seen: list[int] = []

    async def turn(n: int) -> None:
        async def work() -> None:
            await asyncio.sleep(0.05 if n % 2 else 0.01)
            seen.append(n)

        await (a if n % 2 else b).run(openid, work)

    tasks = []
    for n in range(10):
        tasks.append(asyncio.create_task(turn(n)))
        await asyncio.sleep(0.01)  # arrival order
    await asyncio.gather(*tasks)
    assert seen == list(range(10))


async def test_rate_limit_is_shared(redis: Any) -> None:
    from bot.ratelimit import RedisRateLimiter

    openid = f"flood-{asyncio.get_running_loop().time()}"
    one, two = RedisRateLimiter(redis, burst=3), RedisRateLimiter(redis, burst=3)
    results = [await (one if n % 2 else two).allow_async(openid) for n in range(5)]
    assert results == [True, True, True, False, False]


async def test_metrics_in_prometheus_text_format(settings: Settings) -> None:
    client = await client_for(settings)
    try:
        await client.post("/wechat", params=signed_params(), data=text_xml("m1", "猕猴桃"))
        await client.post("/wechat", params={"signature": "bad"}, data=b"<xml/>")
        resp = await client.get("/metrics")
        body = await resp.text()
    finally:
        await client.close()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert re.search(r'^ktp_messages_total\{status="200",type="text"\} \d+$', body, re.M)
    assert re.search(r'^ktp_messages_total\{status="403",type="unparsed"\} \d+$', body, re.M)
    assert "# TYPE ktp_reply_seconds histogram" in body
    assert 'ktp_reply_seconds_bucket{le="+Inf"}' in body
    assert "ktp_outbox_queue_depth 0" in body and "ktp_db_up 1" in body


async def test_late_failure_after_the_ack_is_asked_again_not_apologised(
    settings: Settings, fake_rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.replies import ACK_SLOW

    monkeypatch.setenv("KTP_RECOVER_FAILED_S", "0.1")
    fake_rasa.delay_s, fake_rasa.status = 1.5, 500  # slower than the 1 s budget, then fails
    client = await client_for(settings)
    try:
        resp = await client.post("/wechat", params=signed_params(), data=text_xml("f3", "猕猴桃"))
        assert ACK_SLOW in await resp.text()
        await asyncio.sleep(1.0)
        fake_rasa.delay_s, fake_rasa.status = 0.0, 200
        assert await _wait(lambda: _sent(settings, ("sent", "expired", "pending")) == 1)
    finally:
        await client.close()
    inbound, ack, push = _rows(settings)
    assert inbound.status == "retried" and ack.text == ACK_SLOW
    assert push.channel == "push" and "猕猴桃" in push.text  # the answer, not an apology


def _cases(settings: Settings) -> list[Any]:
    from bot.handoff_models import Case

    engine = db.make_engine(settings.database_url)
    with db.make_sessionmaker(engine)() as session:
        rows = list(session.execute(select(Case).order_by(Case.id)).scalars())
    engine.dispose()
    return rows


async def test_failing_twice_hands_the_question_to_a_person(
    settings: Settings, fake_rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa answers the status check but fails the message again: a case, and the farmer told."""
    monkeypatch.setenv("KTP_RECOVER_FAILED_S", "0.1")
    fake_rasa.status = 500  # the webhook fails; /status stays up
    client = await client_for(settings)
    try:
        resp = await client.post(
            "/wechat", params=signed_params(), data=text_xml("f-twice", "猕猴桃叶子卷了")
        )
        assert APOLOGY in await resp.text()
        assert await _wait(lambda: _sent(settings, ("sent", "pending")) >= 1)
    finally:
        await client.close()
    (case,) = _cases(settings)
    assert (case.farmer_openid, case.symptoms, case.status) == (
        "f-twice",
        "猕猴桃叶子卷了",
        "waiting",
    )
    inbound = _rows(settings)[0]
    assert inbound.status == "retried"
    pushes = [m for m in _rows(settings) if m.channel == "push" and m.openid == "f-twice"]
    assert len(pushes) == 1 and f"求助#{case.id}" in pushes[0].text and "专家" in pushes[0].text


async def test_rasa_down_for_long_hands_over_without_asking_again(
    settings: Settings, fake_rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTP_RECOVER_FAILED_S", "0.1")
    monkeypatch.setenv("KTP_HANDOVER_AFTER_S", "0.5")
    fake_rasa.status = 500
    fake_rasa.down = True  # /status fails too: recovery never asks again
    client = await client_for(settings)
    try:
        for n in range(2):
            resp = await client.post(
                "/wechat",
                params=signed_params(),
                data=text_xml("f-down", f"玉米叶子黄了{n}", msg_id=700 + n),
            )
            assert APOLOGY in await resp.text()
        assert await _wait(lambda: _sent(settings, ("sent", "pending")) >= 2)
    finally:
        await client.close()
    cases = _cases(settings)
    assert len(cases) == 1  # the farmer's open case is reused for the second message
    inbound = [m for m in _rows(settings) if m.direction == "in"]
    assert [m.status for m in inbound] == ["handed_over", "handed_over"]
    pushes = [m.text for m in _rows(settings) if m.channel == "push"]
    assert pushes == [f"已收到，稍后由专家回复（求助#{cases[0].id}）。有照片可以直接发过来。"] * 2


async def test_a_retry_on_another_worker_is_processed_once(
    settings: Settings, fake_rasa: FakeRasa, redis: Any
) -> None:
    """Two gateway workers on one Redis and one database: WeChat's retry of a MsgId reaches
    worker B while worker A is still asking Rasa. Rasa is asked once, one record, one answer."""
    import dataclasses

    from tests.conftest import free_port

    await redis.flushdb()
    shared = dataclasses.replace(settings, redis_url="redis://127.0.0.1:6379/13")
    fake_rasa.delay_s = 0.6  # within the 1 s budget: a passive answer
    a = await client_for(shared)
    b = await client_for(dataclasses.replace(shared, port=free_port()))
    try:
        body = text_xml("f-two", "猕猴桃叶子有褐斑", msg_id=4242)
        first = asyncio.create_task(a.post("/wechat", params=signed_params(), data=body))
        await asyncio.sleep(0.2)
        second = await b.post("/wechat", params=signed_params(), data=body)
        replies = [await (await first).text(), await second.text()]
    finally:
        await a.close()
        await b.close()
    assert len(fake_rasa.received) == 1
    assert all("猕猴桃 · 褐斑病" in r for r in replies), replies
    inbound = [m for m in _rows(settings) if m.direction == "in"]
    assert [m.dedupe_key for m in inbound] == ["4242"]


async def test_redis_round_trips_of_an_uncontended_message(redis: Any) -> None:
    """Claim, rate limit, lane ticket (with the first look at the turn) and lane done: one
    round trip each when nobody else holds the farmer's turn."""
    from collections import Counter

    from bot.dedupe import RedisClaims
    from bot.lanes import RedisLanes
    from bot.ratelimit import RedisRateLimiter

    calls: Counter[str] = Counter()
    inner = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        calls[str(args[0]).lower()] += 1
        return await inner(*args, **options)

    redis.execute_command = counted
    claims, limiter, lanes = RedisClaims(redis), RedisRateLimiter(redis), RedisLanes(redis)
    tag = f"trips-{time.time_ns()}"
    for n in range(3):  # the first call of each script loads it (NOSCRIPT, then EVALSHA)
        calls.clear()

        async def turn() -> str:
            return "answer"

        assert await claims.claim(f"{tag}-{n}") and await limiter.allow_async(tag)
        assert await lanes.run(tag, turn) == "answer"
    assert dict(calls) == {"evalsha": 4}, calls
