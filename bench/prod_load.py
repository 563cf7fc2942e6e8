"""Load on the production mode on this machine (`ketepai run --prod`, PostgreSQL, Redis).

    .venv/bin/python -m bench.prod_load [--rasa-workers 1] [--gateways 2] [--farmers 40]
        [--messages 5] [--kill none|rasa|gateway|actions] [--kill-after 5] [--log FILE]
        [--show-late 10]

Starts the stack on a fresh PostgreSQL schema with a fake WeChat API, sends `farmers` farmers'
messages (each farmer one after another, farmers in parallel; WeChat's 5 s timeout and 3 tries
with the same MsgId), optionally kill -9 one part `kill_after` seconds in, then waits for the
stack to settle and prints messages/s, p50/p95/p99, replies later than 4.5 s, records lost
(MsgIds not in the database) and acknowledged-but-never-answered, with the load average. For
each late message (up to --show-late) it lists what each try met: when it began, how long it
took, and how it ended (a connection error, or ack/answer/success). --log keeps the stack's log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import QUESTIONS, message
from bench.proc_cpu import StackCpu, report
from bot.settings import DEV_WECHAT_TOKEN as TOKEN
from bot.wechat import sign
from tests.prod_helpers import ProdStack, Sent, kill9, outcome, wait_until

NEEDLE = {"rasa": "-m bot.rasa_main run", "gateway": "bot.cli serve", "actions": "rasa_sdk"}


TRIES: dict[int, list[str]] = {}  # MsgId -> what each try met (for the late ones)


async def post(
    http: aiohttp.ClientSession, base: str, openid: str, text: str, msg_id: int
) -> tuple[Sent, float]:
    """One message as WeChat sends it; the latency is until the farmer sees something."""
    body = message(openid, text, msg_id).encode()
    t0 = time.perf_counter()
    tries = TRIES.setdefault(msg_id, [])
    for attempt in range(1, 4):
        ts, nonce = str(int(time.time())), secrets.token_hex(4)
        params = {"signature": sign(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
        t1 = time.perf_counter()
        try:
            async with http.post(
                f"{base}/wechat", params=params, data=body, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                raw = await resp.text()
                if resp.status != 200:
                    took = time.perf_counter() - t1
                    tries.append(f"{t1 - t0:.2f}+{took:.2f}s HTTP {resp.status}")
                    continue
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            tries.append(f"{t1 - t0:.2f}+{time.perf_counter() - t1:.2f}s {exc.__class__.__name__}")
            continue
        reply = "" if raw == "success" else raw.split("<Content><![CDATA[", 1)[-1].split("]]>")[0]
        kind = "ack" if "稍后" in reply else "success" if not reply else "answer"
        tries.append(f"{t1 - t0:.2f}+{time.perf_counter() - t1:.2f}s {kind}")
        return Sent(openid, msg_id, text, reply, attempt), (time.perf_counter() - t0) * 1000
    return Sent(openid, msg_id, text, None, 3), (time.perf_counter() - t0) * 1000


async def load(base: str, farmers: int, messages: int, kill: object) -> tuple[list, list, float]:
    """Every farmer's messages; returns (sent, latencies ms, wall s). Latencies are listed in
    the order of `sent`."""
    run = time.time_ns() // 1000 % 10**12
    sent: list[Sent] = []
    lat: list[float] = []

    async def farmer(n: int, http: aiohttp.ClientSession) -> None:
        for k in range(messages):
            text, msg_id = QUESTIONS[(n + k) % 6], run + n * 100 + k
            s, ms = await post(http, base, f"load-{run}-{n}", text, msg_id)
            sent.append(s)
            lat.append(ms)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(farmer(n, http)) for n in range(farmers)]
        if kill is not None:
            tasks.append(asyncio.create_task(kill()))  # type: ignore[operator]
        await asyncio.gather(*tasks)
    return sent, lat, time.perf_counter() - t0


def main() -> None:
    """Start, load, (kill), settle, report, stop."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rasa-workers", type=int, default=1)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--farmers", type=int, default=40)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--kill", choices=["none", *NEEDLE], default="none")
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument("--log", type=Path, help="keep the stack's log here (post-mortem)")
    parser.add_argument("--show-late", type=int, default=10, help="list this many late messages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = ProdStack(
            Path(tmp),
            KTP_RASA_WORKERS=str(args.rasa_workers),
            KTP_GATEWAY_WORKERS=str(args.gateways),
            KTP_RECOVER_FAILED_S="3",
            KTP_RECOVER_ACKED_S="20",
        )
        try:
            t0 = time.monotonic()
            if not stack.start():
                raise SystemExit(f"stack not healthy:\n{stack.log.read_text()[-2000:]}")
            print(f"production stack ready in {time.monotonic() - t0:.0f} s")
            asyncio.run(load(stack.base, 4, 3, None))  # warm-up: model caches, connections

            async def kill() -> None:
                await asyncio.sleep(args.kill_after)
                kill9(stack.child(NEEDLE[args.kill]))
                print(f"  killed {args.kill} at {args.kill_after:.0f} s")

            before = os.getloadavg()
            assert stack.proc is not None
            cpu = StackCpu(stack.proc.pid)
            cpu_before = cpu.take()
            sent, lat, wall = asyncio.run(
                load(stack.base, args.farmers, args.messages, kill if args.kill != "none" else None)
            )
            during = os.getloadavg()
            cpu_used = cpu.since(cpu_before)
            final: dict[str, list[Any]] = {}

            def settled() -> bool:
                final.update(outcome(stack.db_url, sent))
                return not final["missing"] and not final["unanswered"]

            wait_until(settled, 240, 3.0)
            q = statistics.quantiles(lat, n=100)
            rate = len(sent) / wall
            late = sum(ms > 4500 for ms in lat)
            silent = sum(s.reply is None for s in sent)
            acks = sum(bool(s.reply) and "稍后" in (s.reply or "") for s in sent)
            print(
                f"prod load: {args.gateways} gateway workers, Rasa x{args.rasa_workers}, "
                f"{args.farmers} farmers x {args.messages}, kill: {args.kill}\n"
                f"  messages      : {len(sent)} in {wall:.1f} s = {rate:.1f} messages/s\n"
                f"  latency ms    : p50 {q[49]:.0f}  p95 {q[94]:.0f}  p99 {q[98]:.0f}"
                f"  max {max(lat):.0f}\n"
                f"  later than 4.5 s: {late}   no answer at all (3 tries failed): {silent}\n"
                f"  acknowledged/apology (answer pushed later): {acks}\n"
                f"  records lost  : {len(final['missing'])}   acknowledged, never answered: "
                f"{len(final['unanswered'])} {final['why'][:5]}\n"
                f"  load average  : before {before[0]:.2f}, after {during[0]:.2f} (1 min)\n"
                + report(cpu_used, len(sent))
            )
            late_ones = [(s, ms) for s, ms in zip(sent, lat, strict=True) if ms > 4500]
            late_ones = late_ones[: args.show_late]
            for s, ms in late_ones:
                print(f"  late {s.msg_id} {ms:.0f} ms: " + " | ".join(TRIES.get(s.msg_id, [])))
        finally:
            stack.stop()
            if args.log:
                args.log.write_bytes(stack.log.read_bytes())


if __name__ == "__main__":
    main()
