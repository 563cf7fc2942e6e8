"""A gateway worker killed under production mode: the supervisor reaps it and marks it dead in
Redis, so WeChat's retry of a message it held is taken over at once (not after its heartbeat
expires), the farmer's next turns skip its lane tickets at once, and the retry answers within
what is left of the farmer's 5 seconds. A live holder keeps its claim and its turn."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from bot.settings import Settings
from tests.conftest import FakeRasa, signed_params, text_xml
from tests.test_gateway import client_for
from tests.test_resilience import _rows, redis  # noqa: F401 - the Redis fixture

REDIS_URL = "redis://127.0.0.1:6379/13"


def _sync_redis() -> Any:
    import redis as sync_redis

    return sync_redis.Redis.from_url(REDIS_URL)


def _uid(tag: str) -> str:
    return f"{tag}-{time.time_ns()}"


async def test_claim_of_a_reaped_worker_is_taken_over_at_once(redis: Any) -> None:  # noqa: F811
    from bot.dedupe import RedisClaims, worker_died

    key = _uid("reaped")
    dead, other = RedisClaims(redis), RedisClaims(redis)
    await dead.beat()  # its heartbeat key has seconds to live
    await other.beat()
    assert await dead.acquire(key) == 0.0
    assert await other.acquire(key) is None  # alive: the retry waits for its outcome
    await asyncio.sleep(0.3)
    worker_died(_sync_redis(), dead.me)  # the supervisor reaped it
    spent = await other.acquire(key)
    assert spent is not None and 0.3 <= spent < 2.0  # how long the farmer has waited
    assert other.takeovers == 1
    assert await dead.acquire(key) is None  # the claim is the new holder's now


async def test_release_drops_only_ones_own_claim(redis: Any) -> None:  # noqa: F811
    from bot.dedupe import RedisClaims

    key = _uid("release")
    a, b = RedisClaims(redis), RedisClaims(redis)
    await a.beat()
    assert await a.claim(key)
    await b.release(key)
    assert not await b.claim(key)
    await a.release(key)
    assert await b.claim(key)


async def test_lane_ticket_of_a_reaped_worker_is_skipped_at_once(redis: Any) -> None:  # noqa: F811
    """Worker A holds the farmer's turn (asking Rasa) when it is killed; worker B's next turn
    starts as soon as the supervisor says A is dead, well before the 3 s stall fallback."""
    from bot.dedupe import worker_died
    from bot.lanes import STALL_S, RedisLanes

    openid = _uid("lane-dead")
    a, b = RedisLanes(redis), RedisLanes(redis)
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(60)  # A "dies" here: its ticket is never advanced

    holder = asyncio.create_task(a.run(openid, stuck))
    await started.wait()
    await asyncio.sleep(0.6)  # A's busy key has been refreshed: it looks alive
    seen: list[float] = []

    async def turn() -> None:
        seen.append(time.monotonic())

    t0 = time.monotonic()
    waiter = asyncio.create_task(b.run(openid, turn))
    await asyncio.sleep(0.3)
    assert not seen  # A is alive as far as anyone knows: B waits its turn
    worker_died(_sync_redis(), a._me)
    await asyncio.wait_for(waiter, 2)
    assert seen and seen[0] - t0 < STALL_S and b.skipped == 1
    # A's process is gone in reality; here the task is stopped without touching Redis.
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


async def test_a_waiter_given_up_does_not_hold_the_next_turn(redis: Any) -> None:  # noqa: F811
    from bot.lanes import STALL_S, RedisLanes

    openid = _uid("lane-cancel")
    lanes = RedisLanes(redis)
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        await release.wait()
        order.append("first")

    async def third() -> None:
        order.append("third")

    one = asyncio.create_task(lanes.run(openid, first))
    await asyncio.sleep(0.1)
    two = asyncio.create_task(lanes.run(openid, third))  # will be given up while waiting
    await asyncio.sleep(0.1)
    three = asyncio.create_task(lanes.run(openid, third))
    await asyncio.sleep(0.1)
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)
    t0 = time.monotonic()
    release.set()
    await asyncio.wait_for(asyncio.gather(one, three), STALL_S)
    assert order == ["first", "third"] and time.monotonic() - t0 < 1.0


async def test_turns_of_a_live_worker_keep_their_order(redis: Any) -> None:  # noqa: F811
    """Another worker's death does not let anyone jump a live holder's turn."""
    from bot.dedupe import worker_died
    from bot.lanes import RedisLanes

    openid = _uid("lane-live")
    a, b = RedisLanes(redis), RedisLanes(redis)
    worker_died(_sync_redis(), "somebody-else")
    seen: list[int] = []

    async def turn(n: int) -> None:
        async def work() -> None:
            await asyncio.sleep(0.05 if n % 2 else 0.01)
            seen.append(n)

        await (a if n % 2 else b).run(openid, work)

    tasks = []
    for n in range(6):
        tasks.append(asyncio.create_task(turn(n)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert seen == list(range(6)) and a.skipped == b.skipped == 0


async def test_retry_taken_over_answers_within_the_farmers_budget(
    settings: Settings,
    fake_rasa: FakeRasa,
    redis: Any,  # noqa: F811
) -> None:
    """The first try ran 0.7 s of the 1 s budget on a worker that was then killed. The retry
    on this worker takes the claim over at once and, Rasa being slower than the 0.3 s left,
    acknowledges within them (the answer is pushed), as WeChat's first try would have."""
    from bot.dedupe import ALIVE_PREFIX, worker_died
    from bot.replies import ACK_SLOW

    shared = dataclasses.replace(settings, redis_url=REDIS_URL)
    dead = _uid("gw0-dead")
    first_try = int(time.time() * 1000) - 700
    await redis.set(f"ktp:dedupe:{7001}", f"{dead}|{first_try}", ex=120)
    await redis.set(ALIVE_PREFIX + dead, "1", ex=3)  # its heartbeat has not expired yet
    worker_died(_sync_redis(), dead)
    fake_rasa.delay_s = 0.6  # within a fresh 1 s budget, not within what is left
    client = await client_for(shared)
    try:
        t0 = time.monotonic()
        resp = await client.post(
            "/wechat", params=signed_params(), data=text_xml("f-taken", "猕猴桃", msg_id=7001)
        )
        reply, took = await resp.text(), time.monotonic() - t0
    finally:
        await client.close()
    assert ACK_SLOW in reply and took < 0.6, (reply, took)
    assert len(fake_rasa.received) == 1
    inbound = [m for m in _rows(settings) if m.direction == "in"]
    assert [(m.dedupe_key, m.status) for m in inbound] == [("7001", "acknowledged")]


def test_supervisor_reports_a_reaped_gateway_at_once_and_restarts_it_anew(tmp_path: Any) -> None:
    from bot.dedupe import WORKER_ID_ENV
    from bot.prod import Supervised
    from bot.runner import Child

    reported: list[tuple[str, float]] = []
    child = Child(
        "gw0",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        "http://127.0.0.1:9/healthz",
        {WORKER_ID_ENV: ""},
    )
    s = Supervised(child, lambda who: reported.append((who, time.monotonic())))
    s.start()
    first = child.env[WORKER_ID_ENV]
    assert first.startswith("gw0-")
    try:
        assert child.proc is not None
        killed = time.monotonic()
        child.proc.kill()
        deadline = time.monotonic() + 3
        while not reported and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reported and reported[0][0] == first and reported[0][1] - killed < 0.5
        s.tick(time.monotonic())  # seen dead: restart scheduled after the backoff
        s.tick(time.monotonic() + 5)
        assert child.alive() and child.env[WORKER_ID_ENV] not in ("", first)
    finally:
        child.kill_group()
        if child.proc is not None:
            child.proc.wait()


def test_supervisor_leaves_other_children_without_an_identity() -> None:
    from bot.dedupe import WORKER_ID_ENV
    from bot.prod import Supervised
    from bot.runner import Child

    reported: list[str] = []
    child = Child("actions", [sys.executable, "-c", "pass"], "http://127.0.0.1:9/", {})
    s = Supervised(child, reported.append)
    s.start()
    assert child.proc is not None
    child.proc.wait()
    time.sleep(0.1)
    assert WORKER_ID_ENV not in child.env and reported == []


def test_a_switch_that_reached_one_rasa_worker_restarts_rasa_on_it(tmp_path: Any) -> None:
    """PUT /model reaches one sanic worker: once /status shows the switched model (and it has
    settled), the supervisor is told to restart Rasa on it; the started model, a model merely
    added to models/, or Rasa down ask for nothing."""
    from bot.prod import MODEL_SETTLE_S, ModelFollower

    old, new, other = (tmp_path / f"{n}.tar.gz" for n in ("20260101-old", "20260102-new", "x"))
    for p in (old, new, other):
        p.write_bytes(b"m")
    answers: list[str | None] = []
    serving = [str(old)]
    follower = ModelFollower(lambda: answers.pop(0), tmp_path, lambda: serving[0])
    for answer in (old.name, None, str(old)):  # the started model (relative or absolute), down
        answers.append(answer)
        follower.check(0.0)
    assert follower.due(100.0) is None
    answers.append(new.name)  # one worker took the PUT
    follower.check(10.0)
    answers.append(old.name)  # the other worker still serves the old one
    follower.check(11.0)
    assert follower.due(10.0 + MODEL_SETTLE_S - 0.1) is None  # the PUT may still be answering
    assert follower.due(10.0 + MODEL_SETTLE_S) == new
    assert follower.due(20.0) is None  # once
    answers.append("gone.tar.gz")  # a file that is not there: nothing to restart on
    follower.check(30.0)
    assert follower.due(40.0) is None
    serving[0] = str(new)  # restarted on it
    answers.append(new.name)
    follower.check(50.0)
    assert follower.due(60.0) is None


def test_restart_now_starts_the_child_again_with_new_arguments() -> None:
    from bot.prod import Supervised, with_model
    from bot.runner import Child

    argv = [sys.executable, "-c", "import time; time.sleep(60)", "--model", "a.tar.gz"]
    child = Child("rasa", argv, "http://127.0.0.1:9/", {})
    s = Supervised(child)
    s.start()
    try:
        first = child.proc
        assert first is not None
        s.restart_now(with_model(child.argv, Path("/m/b.tar.gz")))
        assert first.poll() is not None and child.alive() and child.proc is not first
        assert child.argv[-1] == "/m/b.tar.gz" and s.restarts == 1 and s.restart_at is None
    finally:
        child.kill_group()
        if child.proc is not None:
            child.proc.wait()
