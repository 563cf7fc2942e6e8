"""Webhook load against a running stack (`ketepai run` / `make run`), on loopback.

    .venv/bin/python -m bench.webhook_load [--url http://127.0.0.1:8080/wechat]
        [--farmers 40] [--messages 10] [--token $WECHAT_TOKEN]

Each simulated farmer sends its messages one after another (as people do); farmers run in
parallel. Prints messages/s, p50/p95/p99 latency, the share acknowledged (push path) and the
count answered later than 4.5 s, and the CPU milliseconds per message of each of the stack's
processes (bench/proc_cpu.py), which a busy machine disturbs much less than messages/s.
Bounded: farmers x messages requests, no endless loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from urllib.parse import urlsplit

import aiohttp

from bench.common import Figures, farmer
from bench.proc_cpu import StackCpu, report
from bot.settings import DEV_WECHAT_TOKEN


async def main(url: str, token: str, farmers: int, messages: int) -> None:
    """Run the benchmark and print its figures."""
    run = int(time.time())
    stack = StackCpu.find(urlsplit(url).port or 80)
    before = stack.take() if stack is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        figures = Figures()
        await asyncio.gather(
            *(
                farmer(http, url, token, f"bench-{run}-{n}", messages, run * 10_000 + n * 100,
                       figures)
                for n in range(farmers)
            )
        )  # fmt: skip
    print(figures.report(f"webhook load, live stack: {farmers} farmers x {messages} at {url}"))
    if stack is not None:
        print(report(stack.since(before), len(figures.latencies)))
    else:
        print("  CPU per message: the stack's processes were not found (not on this machine?)")
    print(f"  load average  : {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080/wechat")
    parser.add_argument("--token", default=os.environ.get("WECHAT_TOKEN") or DEV_WECHAT_TOKEN)
    parser.add_argument("--farmers", type=int, default=40)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.farmers, args.messages))
