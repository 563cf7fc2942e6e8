"""The gateway's aiohttp application: WeChat webhook, health check and (optionally) simulator."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from sqlalchemy.engine import Engine

from bot import db
from bot.conversation import APOLOGY, Conversations
from bot.rasa_client import RasaClient
from bot.settings import Settings
from bot.wechat import (
    MAX_BODY_BYTES,
    BadRequest,
    Forbidden,
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

    try:
        reply = await request.app[CONVERSATIONS].handle(inbound)
    except Exception:
        # Nothing could be recorded: answer 503 so that WeChat retries the same MsgId later.
        log.exception("failed to handle %s", inbound.dedupe_key)
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


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = db.make_engine(settings.database_url)
    http = aiohttp.ClientSession()
    app[ENGINE] = engine
    app[HTTP] = http
    app[RASA] = RasaClient(http, settings.rasa_url, settings.rasa_token)
    api_base = f"{settings.self_url}/sim/cgi-bin/" if settings.simulator else settings.api_base
    app[CONVERSATIONS] = Conversations(
        rasa=app[RASA],
        sessions=db.make_sessionmaker(engine),
        wechat=WeChatApi(settings.app_id, settings.app_secret, api_base),
        reply_budget_s=settings.reply_budget_s,
    )
    if settings.encoding_aes_key:
        app[SAFE_MODE] = SafeMode(settings.wechat_token, settings.encoding_aes_key, settings.app_id)
    yield
    await app[CONVERSATIONS].drain()
    await http.close()
    engine.dispose()


def create_app(settings: Settings, *, migrate: bool = True) -> web.Application:
    """Build the gateway application; `migrate` brings the schema up to date first."""
    if migrate:
        db.upgrade(settings.database_url)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/wechat", wechat_verify)
    app.router.add_post("/wechat", wechat_receive)
    app.router.add_get("/healthz", healthz)
    if settings.simulator:
        from bot import simulator

        simulator.setup(app)
    return app
