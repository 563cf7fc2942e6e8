"""The gateway's production pieces, added by one call in bot.app: /metrics, the spool for a
database outage, the recovery of unanswered messages, and the Redis heartbeat of this worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import metrics, resilience

log = logging.getLogger(__name__)
REDIS: web.AppKey[Any] = web.AppKey("redis", object)
SPOOL = web.AppKey("spool", resilience.Spool)
EVERY_S = 2.0


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def conversation_extras(redis: Any) -> dict[str, Any]:
    """Rasa's time limit per turn (KTP_RASA_TIMEOUT_S: a turn stuck on a restarting Rasa fails
    and is asked again later), and cross-process ordering and rate limit when Redis is there."""
    extras: dict[str, Any] = {"rasa_timeout_s": _seconds("KTP_RASA_TIMEOUT_S", 20.0)}
    if redis is None:
        return extras
    from bot.lanes import RedisLanes
    from bot.ratelimit import RedisRateLimiter

    return {**extras, "lanes": RedisLanes(redis), "limiter": RedisRateLimiter(redis)}


async def spool_or_raise(app: web.Application, inbound: Any, body: bytes) -> str:
    """The database failed this message: keep it on disk and return the acknowledgement."""
    await asyncio.to_thread(app[SPOOL].put, inbound, body)
    log.warning("database unavailable: %s spooled", inbound.dedupe_key)
    return resilience.ACK_SPOOLED


async def _background(app: web.Application) -> AsyncIterator[None]:
    from bot.app import CONVERSATIONS, ENGINE, OUTBOX, RASA
    from bot.db import make_sessionmaker

    conv, rasa = app[CONVERSATIONS], app[RASA]
    sessions = make_sessionmaker(app[ENGINE])
    failed_after = timedelta(seconds=_seconds("KTP_RECOVER_FAILED_S", 5))
    acked_after = timedelta(seconds=_seconds("KTP_RECOVER_ACKED_S", 90))
    handover_after = timedelta(seconds=_seconds("KTP_HANDOVER_AFTER_S", 300))
    claims = getattr(conv, "_claims", None)

    async def loop() -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            try:
                if await resilience.replay(app[SPOOL], conv.accept_late):
                    app[OUTBOX].wake()
                handed = await asyncio.to_thread(
                    resilience.hand_over_unanswered, sessions, handover_after
                )
                if handed:
                    log.warning("no answer for message(s) %s: handed to a person", handed)
                    metrics.REGISTRY.inc("ktp_handed_over_total", len(handed))
                    app[OUTBOX].wake()
                if not await rasa.status():
                    continue
                todo = await asyncio.to_thread(
                    resilience.claim_unanswered, sessions, failed_after, acked_after
                )
                for msg_id, openid, text in todo:
                    log.info("asking again for message %s (answer to be pushed)", msg_id)
                    metrics.REGISTRY.inc("ktp_recovered_total")
                    conv.ask_again(msg_id, openid, text)
            except Exception as exc:  # the database may still be down: next pass
                log.warning("recovery pass failed: %r", exc, exc_info=True)

    tasks = [asyncio.create_task(loop(), name="recovery")]
    if claims is not None:
        await claims.beat()
        tasks.append(asyncio.create_task(claims.heartbeat(), name="heartbeat"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(app: web.Application) -> None:
    """Install /metrics, the spool and the recovery loop (after bot.app's resources)."""
    from bot.app import ENGINE

    folder = os.environ.get("KTP_SPOOL_DIR") or str(Path("var") / "spool")
    app[SPOOL] = resilience.Spool(Path(folder))
    metrics.setup(app, lambda: app[ENGINE], lambda: app.get(REDIS))
    app.cleanup_ctx.append(_background)
