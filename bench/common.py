"""Shared pieces of the webhook benchmarks: signed WeChat requests and latency figures."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import xmltodict

from bot.replies import ACK_SLOW, RATE_LIMITED
from bot.wechat import sign

QUESTIONS = [
    "猕猴桃叶子上有褐色斑点怎么办",
    "玉米叶子发黄是什么原因",
    "白菜长了菜青虫打什么药",
    "连续4天零下9度，会把白菜冻坏吗",
    "茶树施什么肥好",
    "猪不吃食还发烧",
]


@dataclass
class Figures:
    """Latencies (ms) and outcomes of a run."""

    latencies: list[float] = field(default_factory=list)
    acks: int = 0
    errors: int = 0
    late: int = 0  # answers after 4.5 s
    # Replies from the per-farmer rate limiter (burst 8, then one per 2 s): no answer, so a run
    # where farmers send more than 8 messages back to back measures the limiter, not the bot.
    limited: int = 0
    started: float = field(default_factory=time.perf_counter)

    def report(self, title: str) -> str:
        """The figures, one line each."""
        wall = time.perf_counter() - self.started
        n = len(self.latencies)
        q = statistics.quantiles(self.latencies, n=100) if n > 1 else [0.0] * 99
        return (
            f"{title}\n"
            f"  messages      : {n} in {wall:.1f} s = {n / wall:.1f} messages/s\n"
            f"  latency ms    : p50 {q[49]:.1f}  p95 {q[94]:.1f}  p99 {q[98]:.1f}"
            f"  max {max(self.latencies, default=0):.1f}\n"
            f"  push path     : {self.acks} ({100 * self.acks / max(n, 1):.1f} %)\n"
            f"  later than 4.5 s: {self.late}   errors: {self.errors}"
            f"   rate-limited: {self.limited}"
            + ("  (not answers: keep messages per farmer <= 8)" if self.limited else "")
        )


def message(openid: str, text: str, msg_id: int) -> str:
    """A farmer's text message as WeChat POSTs it."""
    return xmltodict.unparse(
        {
            "xml": {
                "ToUserName": "gh_bench",
                "FromUserName": openid,
                "CreateTime": str(int(time.time())),
                "MsgType": "text",
                "Content": text,
                "MsgId": str(msg_id),
            }
        },
        full_document=False,
    )


async def farmer(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    openid: str,
    count: int,
    first_id: int,
    figures: Figures,
) -> None:
    """One farmer sending `count` messages, each after the previous answer (as people do)."""
    for n in range(count):
        ts, nonce = str(int(time.time())), secrets.token_hex(4)
        params = {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce}
        body = message(openid, QUESTIONS[(first_id + n) % len(QUESTIONS)], first_id + n)
        t0 = time.perf_counter()
        try:
            async with http.post(url, params=params, data=body.encode()) as resp:
                raw = await resp.text()
                ok = resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok, raw = False, ""
        ms = (time.perf_counter() - t0) * 1000
        if not ok:
            figures.errors += 1
            continue
        figures.latencies.append(ms)
        figures.late += ms > 4500
        if raw not in {"", "success"} and ACK_SLOW in raw:
            figures.acks += 1
        if RATE_LIMITED in raw:
            figures.limited += 1
