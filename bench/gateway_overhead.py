"""The gateway's own overhead per message, with Rasa mocked by an instant HTTP server.

    .venv/bin/python -m bench.gateway_overhead [--farmers 50] [--messages 20]

Starts the gateway in-process on SQLite in a temporary folder (simulator on, so pushes have
somewhere to go) and a stand-in Rasa that answers at once; prints messages/s and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from bench.common import Figures, farmer
from bot.app import create_app
from bot.settings import Settings
from tests.conftest import FakeRasa, free_port


async def main(farmers: int, messages: int, redis_url: str | None = None) -> None:
    """Run the benchmark and print its figures."""
    fake = FakeRasa()
    rasa = TestServer(fake.app(), host="127.0.0.1", port=free_port())
    await rasa.start_server()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            port=free_port(),
            rasa_port=int(rasa.port or 0),
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
        url = f"{settings.self_url}/wechat"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await farmer(http, url, "bench-token", "warm-up", 5, 10**9, Figures())
            figures = Figures()
            cpu0 = time.process_time()
            await asyncio.gather(
                *(
                    farmer(http, url, "bench-token", f"o{n}", messages, n * 10_000, figures)
                    for n in range(farmers)
                )
            )
        cpu_ms = (time.process_time() - cpu0) * 1000 / max(1, len(figures.latencies))
        where = f", Redis {redis_url}" if redis_url else ""
        title = f"gateway overhead, Rasa mocked{where}: {farmers} farmers x {messages}"
        print(figures.report(title))
        print(
            f"  CPU ms/message: {cpu_ms:.1f} (this one process: gateway, its DB threads, and the"
            " stand-in Rasa and farmers)"
        )
        await gateway.close()
    await rasa.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--farmers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--redis", default=None, help="REDIS_URL for the gateway (prod mode)")
    args = parser.parse_args()
    asyncio.run(main(args.farmers, args.messages, args.redis))
