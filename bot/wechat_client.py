"""The WeChat API client on aiohttp (never blocks the event loop).

Every call carries the shared access_token; a 40001/42001/40014 answer (token invalid or
expired) triggers one refresh through `AccessTokens.invalidate` and one retry.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.access_token import AccessTokens

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
WINDOW_CLOSED = 45015  # the farmer has not written in 48 h
QUOTA_USED = 45047  # 5 pushes since the farmer's last message


class WeChatError(Exception):
    """WeChat answered with a non-zero errcode, or could not be reached (errcode -1)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass(frozen=True)
class Media:
    """A downloaded media file."""

    content: bytes
    content_type: str


class WeChatApi:
    """Async client for the few WeChat APIs the bot uses."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        app_id: str,
        secret: str,
        api_base: str,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self._http = http
        self._app_id = app_id
        self._secret = secret
        self._base = api_base if api_base.endswith("/") else api_base + "/"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.tokens: AccessTokens | None = None  # set by the app once the store is chosen

    async def fetch_token(self) -> tuple[str, int]:
        """Ask WeChat for a new access_token (only AccessTokens calls this)."""
        params = {"grant_type": "client_credential", "appid": self._app_id, "secret": self._secret}
        data = await self._json("GET", "token", params=params)
        if data.get("errcode"):
            raise WeChatError(int(data["errcode"]), str(data.get("errmsg", "")))
        return str(data["access_token"]), int(data.get("expires_in", 7200))

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http.request(
                method, self._base + path, timeout=self._timeout, **kwargs
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise WeChatError(-1, f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WeChatError(-1, f"{exc.__class__.__name__}: {exc}") from None
        try:
            data: dict[str, Any] = json.loads(body)
        except ValueError:
            raise WeChatError(-1, "not JSON") from None
        return data

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Call an API with the token; refresh it once if WeChat says it is bad."""
        assert self.tokens is not None, "the app sets WeChatApi.tokens"
        token = await self.tokens.get()
        data = await self._json(method, path, params={"access_token": token}, **kwargs)
        if int(data.get("errcode") or 0) in TOKEN_ERRORS:
            log.warning("WeChat refused the access_token (%s); refreshing", data.get("errcode"))
            token = await self.tokens.invalidate(token)
            data = await self._json(method, path, params={"access_token": token}, **kwargs)
        code = int(data.get("errcode") or 0)
        if code:
            raise WeChatError(code, str(data.get("errmsg", "")))
        return data

    async def send_text(self, openid: str, content: str) -> None:
        """Push a text through the customer-service API (raises WeChatError)."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": content}}
        await self._call("POST", "message/custom/send", data=_utf8_json(payload))

    async def send_template(
        self,
        openid: str,
        template_id: str,
        data: dict[str, Any],
        url: str | None = None,
    ) -> int | None:
        """Send a template message (not bound to the 48 h window); WeChat's msgid, if given.

        `data` maps the template's fields to values: {"first": "...", "keyword1": "..."} or
        already in WeChat's form {"first": {"value": "..."}}.
        """
        payload = template_payload(openid, template_id, data, url)
        answer = await self._call("POST", "message/template/send", data=_utf8_json(payload))
        msgid = answer.get("msgid")
        return int(msgid) if isinstance(msgid, int) else None

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the account's custom menu."""
        await self._call("POST", "menu/create", data=_utf8_json(menu))

    async def get_media(self, media_id: str) -> Media:
        """Download a farmer's photo or voice by MediaId (errors come back as JSON)."""
        assert self.tokens is not None, "the app sets WeChatApi.tokens"
        for attempt in range(2):
            token = await self.tokens.get()
            params = {"access_token": token, "media_id": media_id}
            try:
                async with self._http.get(
                    self._base + "media/get", params=params, timeout=self._timeout
                ) as resp:
                    body = await resp.read()
                    ctype = resp.headers.get("Content-Type", "application/octet-stream")
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise WeChatError(-1, f"{exc.__class__.__name__}: {exc}") from None
            if status != 200:
                raise WeChatError(-1, f"HTTP {status}")
            if not ctype.startswith(("application/json", "text/plain")):
                return Media(body, ctype.split(";")[0].strip())
            try:
                data = json.loads(body)
            except ValueError:
                raise WeChatError(-1, "unreadable media answer") from None
            code = int(data.get("errcode") or 0)
            if code in TOKEN_ERRORS and attempt == 0:
                await self.tokens.invalidate(token)
                continue
            raise WeChatError(code or -1, str(data.get("errmsg", "no media in answer")))
        raise WeChatError(-1, "media/get failed")


def template_payload(
    openid: str, template_id: str, data: dict[str, Any], url: str | None = None
) -> dict[str, Any]:
    """The body of message/template/send: touser, template_id, data ({field: {"value": v}}),
    and url when the message should open a page."""
    fields = {
        str(k): (dict(v) if isinstance(v, dict) else {"value": str(v)}) for k, v in data.items()
    }
    payload: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": fields}
    if url:
        payload["url"] = url
    return payload


def _utf8_json(payload: dict[str, Any]) -> bytes:
    # WeChat wants raw UTF-8, not \u escapes, in message bodies.
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")
