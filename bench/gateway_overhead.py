"""The gateway's own overhead per message, with Rasa mocked by an instant HTTP server.

    .venv/bin/python -m bench.gateway_overhead [--farmers 50] [--messages 20] [--redis URL]
        [--keep-rate-limit] [--one-process]

Starts the gateway in-process on SQLite in a temporary folder (simulator on, so pushes have
somewhere to go) and a stand-in Rasa that answers at once; prints messages/s and latency. The
stand-in Rasa and the simulated farmers run in a child process of their own, as Rasa and WeChat do,
so the gateway's event loop and the CPU figure are the gateway's alone; --one-process runs them on
the gateway's loop (the earlier way, which adds their work to every latency).

Each farmer sends as fast as the answers come, far above the per-farmer rate limit (8 at once,
then one per 2 s): with the limit, most messages would take the short rate-limited path (no
Rasa, no lane). The limiter is therefore given a huge burst (the same code and Redis calls run,
nothing is refused) unless --keep-rate-limit. MsgIds are new in each run (Redis keeps claims for
120 s: a rerun would otherwise meet its predecessor's claims).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bench.common import Figures, farmer
from bot import db
from bot.app import CONVERSATIONS, create_app
from bot.prod_app import REDIS
from bot.ratelimit import RateLimiter, RedisRateLimiter
from bot.settings import Settings
from tests.conftest import FakeRasa, free_port


async def main(
    farmers: int,
    messages: int,
    redis_url: str | None = None,
    keep_rate_limit: bool = False,
    one_process: bool = False,
) -> None:
    """Run the benchmark and print its figures."""
    fake = FakeRasa()
    rasa: TestServer | None = None
    child: Any = None
    if one_process:
        rasa = TestServer(fake.app(), host="127.0.0.1", port=free_port())
        await rasa.start_server()
        rasa_port = int(rasa.port or 0)
    else:
        pipe, child_end = multiprocessing.get_context("spawn").Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=_client_process, args=(child_end, farmers, messages), daemon=True
        )
        child.start()
        rasa_port = int(await asyncio.to_thread(pipe.recv))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            port=free_port(),
            rasa_port=rasa_port,
            action_port=free_port(),
            database_url=f"sqlite:///{tmp}/bench.db",
            simulator=True,
            wechat_token="bench-token",
            rasa_token=fake.token,
            redis_url=redis_url,
        )
        app = create_app(settings, media_dir=Path(tmp) / "media")
        gateway = TestServer(app, host="127.0.0.1", port=settings.port)
        await gateway.start_server()
        conv = app[CONVERSATIONS]
        if not keep_rate_limit:
            redis = app[REDIS]
            conv._limiter = (  # the same calls, never refusing
                RedisRateLimiter(redis, burst=10**9) if redis else RateLimiter(burst=10**9)
            )
        url = f"{settings.self_url}/wechat"
        run = time.time_ns() // 1000 % 10**12 * 1000  # MsgIds of this run only
        calls = _count_redis_calls(app[REDIS])
        if child is None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                await farmer(http, url, "bench-token", f"warm-up-{run}", 5, run + 10**9, Figures())
                calls.clear()
                figures = Figures()
                cpu0 = time.process_time()
                await _farmers(http, url, farmers, messages, run, figures)
        else:
            pipe.send((url, run))
            await asyncio.to_thread(pipe.recv)  # warmed up
            calls.clear()
            cpu0 = time.process_time()
            pipe.send("go")
            figures = await asyncio.to_thread(pipe.recv)
        cpu_ms = (time.process_time() - cpu0) * 1000 / max(1, len(figures.latencies))
        calls = Counter(calls)  # taken now: background calls after the run do not count
        where = f", Redis {redis_url}" if redis_url else ""
        limit = ", rate limit kept" if keep_rate_limit else ""
        title = f"gateway overhead, Rasa mocked{where}{limit}: {farmers} farmers x {messages}"
        print(figures.report(title))
        print(f"  rate-limited  : {await _count_rate_limited(settings.database_url)}")
        if calls:
            n = max(1, len(figures.latencies))
            shown = "  ".join(f"{k} {v / n:.2f}" for k, v in sorted(calls.items()))
            print(f"  Redis round trips/message: {sum(calls.values()) / n:.2f} ({shown})")
        what = (
            "this one process: gateway, its DB threads, and the stand-in Rasa and farmers"
            if child is None
            else "the gateway's process alone; stand-in Rasa and farmers in another"
        )
        print(f"  CPU ms/message: {cpu_ms:.1f} ({what})")
        await gateway.close()
    if rasa is not None:
        await rasa.close()
    if child is not None:
        pipe.send("stop")
        child.join(10)


async def _farmers(
    http: aiohttp.ClientSession, url: str, farmers: int, messages: int, run: int, figures: Figures
) -> None:
    await asyncio.gather(
        *(
            farmer(http, url, "bench-token", f"o{n}-{run}", messages, run + n * 10**6, figures)
            for n in range(farmers)
        )
    )


def _client_process(pipe: Connection, farmers: int, messages: int) -> None:
    """The child: a stand-in Rasa and the farmers, on an event loop of their own."""

    async def serve() -> None:
        fake = FakeRasa()
        rasa = TestServer(fake.app(), host="127.0.0.1", port=free_port())
        await rasa.start_server()
        pipe.send(rasa.port)
        url, run = await asyncio.to_thread(pipe.recv)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await farmer(http, url, "bench-token", f"warm-up-{run}", 5, run + 10**9, Figures())
            pipe.send("warm")
            await asyncio.to_thread(pipe.recv)  # go
            figures = Figures()
            await _farmers(http, url, farmers, messages, run, figures)
        pipe.send(figures)
        await asyncio.to_thread(pipe.recv)  # stop
        await rasa.close()

    asyncio.run(serve())


def _count_redis_calls(redis: Any) -> Counter[str]:
    """Count the gateway's Redis round trips by command (a script counts as one EVALSHA)."""
    calls: Counter[str] = Counter()
    if redis is None:
        return calls
    inner = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        calls[str(args[0]).lower()] += 1
        return await inner(*args, **options)

    redis.execute_command = counted
    return calls


async def _count_rate_limited(url: str) -> int:
    from sqlalchemy import func, select

    from bot.models import Message

    def count() -> int:
        engine = db.make_engine(url)
        try:
            with db.make_sessionmaker(engine)() as session:
                query = select(func.count()).where(Message.status == "rate_limited")
                return int(session.execute(query).scalar_one())
        finally:
            engine.dispose()

    return await asyncio.to_thread(count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--farmers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--redis", default=None, help="REDIS_URL for the gateway (prod mode)")
    parser.add_argument(
        "--keep-rate-limit", action="store_true", help="farmers over the limit get its reply"
    )
    parser.add_argument(
        "--one-process", action="store_true", help="stand-in Rasa and farmers on the gateway's loop"
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.farmers, args.messages, args.redis, args.keep_rate_limit, args.one_process)
    )
