"""The gateway's aiohttp application: WeChat webhook, health check and (optionally) simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import QueuePool

from bot import admin, console, db, prod_app
from bot.access_token import AccessTokens, DbTokenBackend, RedisTokenBackend, TokenBackend
from bot.conversation import Conversations
from bot.dedupe import RedisClaims
from bot.media import MediaFetcher
from bot.outbox import OutboxSender
from bot.rasa_client import RasaClient
from bot.replies import APOLOGY
from bot.settings import Settings
from bot.wechat import (
    MAX_BODY_BYTES,
    BadRequest,
    Forbidden,
    Inbound,
    SafeMode,
    check_signature,
    parse_inbound,
    render_text_reply,
)
from bot.wechat_client import WeChatApi

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
HTTP = web.AppKey("http", aiohttp.ClientSession)
RASA = web.AppKey("rasa", RasaClient)
CONVERSATIONS = web.AppKey("conversations", Conversations)
SAFE_MODE = web.AppKey("safe_mode", SafeMode)
WECHAT = web.AppKey("wechat", WeChatApi)
OUTBOX = web.AppKey("outbox", OutboxSender)
MEDIA = web.AppKey("media", MediaFetcher)
MEDIA_DIR = web.AppKey("media_dir", Path)
# Set by the simulator: sees every verified inbound message (as WeChat would), and slows the bot.
InboundHook = Callable[[Inbound], None]
DelaySource = Callable[[], float]
INBOUND_HOOK: web.AppKey[InboundHook] = web.AppKey("inbound_hook")
EXTRA_DELAY: web.AppKey[DelaySource] = web.AppKey("extra_delay")


async def wechat_verify(request: web.Request) -> web.StreamResponse:
    """GET /wechat: WeChat's URL verification, echoing `echostr` when the signature is right."""
    settings = request.app[SETTINGS]
    q = request.query
    try:
        check_signature(
            settings.wechat_token, q.get("signature"), q.get("timestamp"), q.get("nonce")
        )
    except Forbidden as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    return web.Response(text=q.get("echostr", ""))


async def wechat_receive(request: web.Request) -> web.StreamResponse:
    """POST /wechat: a farmer's message or event, answered with a passive XML reply."""
    settings = request.app[SETTINGS]
    q = request.query
    timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
    safe = request.app.get(SAFE_MODE) if q.get("encrypt_type") == "aes" else None
    try:
        check_signature(
            settings.wechat_token,
            q.get("signature"),
            timestamp,
            nonce,
            replay_window_s=settings.replay_window_s,
        )
        body = await request.read()
        if safe is not None:
            body = safe.decrypt(body, q.get("msg_signature"), timestamp, nonce)
        inbound = parse_inbound(body)
    except Forbidden as exc:
        log.warning("refused unsigned/bad request: %s", exc)
        raise web.HTTPForbidden(text=str(exc)) from None
    except BadRequest as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request["ktp_msg_type"] = inbound.msg_type  # for /metrics
    hook = request.app.get(INBOUND_HOOK)
    if hook is not None:
        hook(inbound)

    try:
        # Failures are recorded and apologised for inside; what escapes could not be recorded.
        reply = await request.app[CONVERSATIONS].handle(inbound)
    except Exception:
        # Nothing could be recorded (database down): keep it on disk and acknowledge; if even
        # that fails, answer 503 so that WeChat retries the same MsgId later.
        log.exception("failed to handle %s", inbound.dedupe_key)
        try:
            reply = await prod_app.spool_or_raise(request.app, inbound, body)
        except Exception:
            log.exception("could not spool %s", inbound.dedupe_key)
            raise web.HTTPServiceUnavailable(text=APOLOGY) from None
    if not reply:
        return web.Response(text="success")
    xml = render_text_reply(inbound, reply)
    if safe is not None:
        xml = safe.encrypt(xml, nonce, timestamp or str(int(time.time())))
    return web.Response(text=xml, content_type="application/xml")


async def healthz(request: web.Request) -> web.StreamResponse:
    """GET /healthz: 200 when Rasa, the action server and the database are up, else 503."""
    settings = request.app[SETTINGS]
    http = request.app[HTTP]

    async def actions_ok() -> bool:
        try:
            async with http.get(
                f"{settings.action_url}/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def db_ok() -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(db.ping, request.app[ENGINE]), 3)
            return True
        except Exception:
            return False

    rasa, actions, database = await asyncio.gather(
        request.app[RASA].status(), actions_ok(), db_ok()
    )
    parts = {
        "rasa": "ok" if rasa else "down",
        "actions": "ok" if actions else "down",
        "db": "ok" if database else "down",
    }
    status = 200 if all(v == "ok" for v in parts.values()) else 503
    return web.json_response(parts, status=status)


def _engine(url: str) -> Engine:
    """The gateway's engine; SQLite keeps its connections (SQLAlchemy 1.4 would open one per
    transaction, which costs ~30 ms a message here)."""
    if make_url(url).get_backend_name() == "sqlite":
        return db.make_engine(url, poolclass=QueuePool, pool_size=8, max_overflow=8)
    return db.make_engine(url)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = _engine(settings.database_url)
    sessions = db.make_sessionmaker(engine)
    http = aiohttp.ClientSession()
    # Rasa's Sanic workers share one listening socket: a kept-alive connection stays with the
    # worker that accepted it, and measured under load one of two workers did 9/10 of the work.
    # A fresh loopback connection per message goes to a worker that is free to accept it.
    rasa_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    redis = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        # Timeouts: a Redis call must never hang a farmer's turn.
        redis = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    app[ENGINE] = engine
    app[prod_app.REDIS] = redis
    app[HTTP] = http
    app[RASA] = RasaClient(rasa_http, settings.rasa_url, settings.rasa_token)
    api_base = f"{settings.self_url}/sim/cgi-bin/" if settings.simulator else settings.api_base
    wechat = WeChatApi(http, settings.app_id, settings.app_secret, api_base)
    backend: TokenBackend = (
        RedisTokenBackend(redis, settings.app_id)
        if redis is not None
        else DbTokenBackend(sessions, settings.app_id)
    )
    wechat.tokens = AccessTokens(backend, wechat.fetch_token)
    app[WECHAT] = wechat
    app[OUTBOX] = OutboxSender(
        sessions,
        wechat,
        templates=settings.templates,
        public_url=settings.public_base_url
        or (settings.public_url if settings.simulator else None),
    )
    app[MEDIA] = MediaFetcher(sessions, wechat, app[MEDIA_DIR])
    app[CONVERSATIONS] = Conversations(
        rasa=app[RASA],
        sessions=sessions,
        sender=app[OUTBOX],
        fetcher=app[MEDIA],
        claims=RedisClaims(redis) if redis is not None else None,
        **prod_app.conversation_extras(redis),
        reply_budget_s=settings.reply_budget_s,
        extra_delay_s=app.get(EXTRA_DELAY),
    )
    if settings.encoding_aes_key:
        app[SAFE_MODE] = SafeMode(settings.wechat_token, settings.encoding_aes_key, settings.app_id)
    workers = [
        asyncio.create_task(app[OUTBOX].run(), name="outbox"),
        asyncio.create_task(app[MEDIA].run(), name="media"),
    ]
    yield
    await app[CONVERSATIONS].drain()
    await app[OUTBOX].run_once()  # answers that just reached the outbox
    for task in workers:
        task.cancel()
    for task in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if redis is not None:
        await redis.close()
    await http.close()
    await rasa_http.close()
    engine.dispose()


async def escalate_once(app: web.Application) -> list[int]:
    """Offer every case unclaimed for KTP_ESCALATE_AFTER_MIN to the next person; one transaction."""
    from bot import handoff
    from bot.handoff_push import outbox_sender
    from bot.roster import utcnow

    after = timedelta(minutes=app[SETTINGS].escalate_after_min)
    sessions = db.make_sessionmaker(app[ENGINE])

    def work() -> list[int]:
        with sessions() as session, session.begin():
            return handoff.escalate_due(
                utcnow(), session=session, after=after, sender=outbox_sender
            )

    moved = await asyncio.to_thread(work)
    if moved:
        log.info("escalated case(s) %s", ", ".join(f"#{i}" for i in moved))
        app[OUTBOX].wake()
    return moved


async def _escalation(app: web.Application) -> AsyncIterator[None]:
    """Every KTP_ESCALATE_EVERY_S, move unclaimed cases on (see escalate_once)."""

    async def loop() -> None:
        every = app[SETTINGS].escalate_every_s
        while True:
            await asyncio.sleep(every)
            try:
                await escalate_once(app)
            except Exception:  # a database hiccup must not stop escalation for good
                log.exception("escalation pass failed")

    task = asyncio.create_task(loop(), name="escalation")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings, *, migrate: bool = True, media_dir: Path | None = None
) -> web.Application:
    """Build the gateway application; `migrate` brings the schema up to date first."""
    if migrate:
        db.upgrade(settings.database_url)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[MEDIA_DIR] = media_dir or Path(os.environ.get("KTP_MEDIA_DIR") or "var/media")
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_escalation)
    prod_app.setup(app)  # /metrics, spool, recovery
    app.router.add_get("/wechat", wechat_verify)
    app.router.add_post("/wechat", wechat_receive)
    app.router.add_get("/healthz", healthz)
    console.setup(app)
    admin.setup(app)
    if settings.simulator:
        from bot import simulator

        simulator.setup(app)
    return app
