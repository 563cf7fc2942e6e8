"""The WeChat API client (customer-service pushes), kept off the event loop.

wechatpy's client is blocking (requests), so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wechatpy import WeChatClient


class _Client(WeChatClient):
    """wechatpy's client with a configurable API base for the token call too."""

    def fetch_access_token(self) -> dict[str, Any]:
        result: dict[str, Any] = self._fetch_access_token(
            url=f"{self.API_BASE_URL}token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
        return result


class WeChatApi:
    """Async facade over wechatpy's blocking client."""

    def __init__(self, app_id: str, secret: str, api_base: str, timeout_s: float = 5.0) -> None:
        self._client = _Client(app_id, secret, timeout=timeout_s)
        self._client.API_BASE_URL = api_base if api_base.endswith("/") else api_base + "/"

    async def send_text(self, openid: str, content: str) -> None:
        """Push a text through the customer-service API (raises WeChatClientException)."""
        await asyncio.to_thread(self._client.message.send_text, openid, content)
