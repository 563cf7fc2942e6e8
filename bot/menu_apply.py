"""Sends the custom menu to WeChat with the shared access_token (for `ketepai wechat menu`)."""

from __future__ import annotations

from typing import Any

import aiohttp

from bot import db
from bot.access_token import AccessTokens, DbTokenBackend, RedisTokenBackend, TokenBackend
from bot.settings import Settings
from bot.wechat_client import WeChatApi


async def apply_menu(settings: Settings, menu: dict[str, Any]) -> None:
    """Create the menu; the token comes from (and goes to) the store the gateway shares."""
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    redis = None
    try:
        async with aiohttp.ClientSession() as http:
            base = f"{settings.self_url}/sim/cgi-bin/" if settings.simulator else settings.api_base
            api = WeChatApi(http, settings.app_id, settings.app_secret, base)
            backend: TokenBackend
            if settings.redis_url:
                import redis.asyncio as aioredis

                redis = aioredis.from_url(settings.redis_url)
                backend = RedisTokenBackend(redis, settings.app_id)
            else:
                backend = DbTokenBackend(db.make_sessionmaker(engine), settings.app_id)
            api.tokens = AccessTokens(backend, api.fetch_token)
            await api.create_menu(menu)
    finally:
        if redis is not None:
            await redis.close()
        engine.dispose()
