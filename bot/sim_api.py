"""The simulator's stand-in for WeChat's API (`/sim/cgi-bin/...`), with WeChat's error codes.

Like WeChat, a new access_token invalidates the old one (40001 after that); a push is refused
with 45015 when the farmer has not written in 48 h and 45047 after 5 pushes since their last
message; media/get answers 40007 for an unknown MediaId. Template messages are not bound to the
window (as on WeChat) and show in the outbox as {"msgtype": "template", "template_id", "data"}.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from bot.wechat import Inbound

WINDOW_S = 48 * 3600
PUSHES_PER_MESSAGE = 5


@dataclass
class SimState:
    """Tokens issued, messages seen and pushed, media, the menu: in memory for the process."""

    token: str | None = None
    token_fetches: int = 0
    outbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    msg_seq: int = field(default_factory=lambda: int(time.time() * 1000) * 1000)
    # openid -> (time of the farmer's last message, pushes since)
    window: dict[str, tuple[float, int]] = field(default_factory=dict)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    menu: dict[str, Any] | None = None
    slow_s: float = 0.0
    event_times: dict[str, int] = field(default_factory=dict)

    def saw_inbound(self, inbound: Inbound) -> None:
        """WeChat saw the farmer write: a 48 h window with 5 pushes opens."""
        self.window[inbound.openid] = (time.time(), 0)

    def new_media(self, content: bytes, content_type: str) -> str:
        """Store an uploaded file and return its MediaId."""
        media_id = "sim_media_" + secrets.token_urlsafe(12)
        self.media[media_id] = (content, content_type)
        return media_id


SIM = web.AppKey("sim", SimState)


def _error(code: int, msg: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": msg})


def _token_ok(request: web.Request) -> bool:
    current = request.app[SIM].token
    given = request.query.get("access_token", "")
    return current is not None and hmac.compare_digest(given, current)


async def cgi_token(request: web.Request) -> web.StreamResponse:
    """GET /sim/cgi-bin/token: a new access_token (which invalidates the previous one)."""
    from bot.app import SETTINGS

    settings = request.app[SETTINGS]
    q = request.query
    ok_id = hmac.compare_digest(q.get("appid", ""), settings.app_id)
    ok_secret = hmac.compare_digest(q.get("secret", ""), settings.app_secret)
    if q.get("grant_type") != "client_credential" or not (ok_id and ok_secret):
        return _error(40013, "invalid appid or secret")
    state = request.app[SIM]
    state.token = secrets.token_urlsafe(32)
    state.token_fetches += 1
    return web.json_response({"access_token": state.token, "expires_in": 7200})


async def cgi_custom_send(request: web.Request) -> web.StreamResponse:
    """POST /sim/cgi-bin/message/custom/send: a customer-service push, within WeChat's rules."""
    state = request.app[SIM]
    if not _token_ok(request):
        return _error(40001, "invalid credential, access_token is invalid or not latest")
    try:
        body = json.loads(await request.read())
        touser, msgtype = str(body["touser"]), str(body["msgtype"])
    except (ValueError, KeyError, TypeError):
        return _error(44002, "empty post data")
    seen, pushes = state.window.get(touser, (0.0, 0))
    code = 0
    if time.time() - seen > WINDOW_S:
        code = 45015
    elif pushes >= PUSHES_PER_MESSAGE:
        code = 45047
    state.calls.append({"api": "message/custom/send", "touser": touser, "errcode": code})
    if code:
        state.refused.append({"touser": touser, "errcode": code, "body": body})
        msg = "response out of time limit" if code == 45015 else "out of response count limit"
        return _error(code, msg)
    state.window[touser] = (seen, pushes + 1)
    item: dict[str, Any] = {"msgtype": msgtype, "at": datetime.now(timezone.utc).isoformat()}
    if msgtype == "text":
        item["content"] = body.get("text", {}).get("content", "")
    else:
        item.update({k: v for k, v in body.items() if k not in {"touser", "msgtype"}})
    state.outbox.setdefault(touser, []).append(item)
    return _error(0, "ok")


async def cgi_template_send(request: web.Request) -> web.StreamResponse:
    """POST /sim/cgi-bin/message/template/send: a template message. Not bound to the 48 h window
    or its 5 pushes (as on WeChat); recorded in the outbox as {"msgtype": "template", ...}."""
    state = request.app[SIM]
    if not _token_ok(request):
        return _error(40001, "invalid credential, access_token is invalid or not latest")
    try:
        body = json.loads(await request.read())
        touser, template_id = str(body["touser"]), str(body["template_id"])
        data = body["data"]
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and "value" in v for v in data.values()
        ):
            raise TypeError("data")
    except (ValueError, KeyError, TypeError):
        return _error(47001, "data format error")
    if not template_id.strip():
        state.calls.append({"api": "message/template/send", "touser": touser, "errcode": 40037})
        return _error(40037, "invalid template_id")
    state.calls.append({"api": "message/template/send", "touser": touser, "errcode": 0})
    state.msg_seq += 1
    item: dict[str, Any] = {
        "msgtype": "template",
        "template_id": template_id,
        "data": data,
        "at": datetime.now(timezone.utc).isoformat(),
    }
    if body.get("url"):
        item["url"] = str(body["url"])
    state.outbox.setdefault(touser, []).append(item)
    return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": state.msg_seq})


async def cgi_media_get(request: web.Request) -> web.StreamResponse:
    """GET /sim/cgi-bin/media/get: the file behind a MediaId, or a JSON error."""
    state = request.app[SIM]
    if not _token_ok(request):
        return _error(40001, "invalid credential")
    media_id = request.query.get("media_id", "")
    state.calls.append({"api": "media/get", "media_id": media_id})
    found = state.media.get(media_id)
    if found is None:
        return _error(40007, "invalid media_id")
    content, ctype = found
    return web.Response(
        body=content,
        content_type=ctype,
        headers={"Content-Disposition": f'attachment; filename="{media_id}"'},
    )


async def cgi_menu_create(request: web.Request) -> web.StreamResponse:
    """POST /sim/cgi-bin/menu/create: replace the custom menu (1-3 buttons, names ≤ 16 bytes)."""
    state = request.app[SIM]
    if not _token_ok(request):
        return _error(40001, "invalid credential")
    try:
        menu = json.loads(await request.read())
        buttons = menu["button"]
        ok = 1 <= len(buttons) <= 3 and all(
            len(str(b["name"]).encode()) <= 16 and b.get("type") in {"click", "view", None}
            for b in buttons
        )
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        return _error(40016, "invalid button size or name")
    state.menu = menu
    state.calls.append({"api": "menu/create"})
    return _error(0, "ok")


def setup(app: web.Application) -> None:
    """Mount the fake WeChat API."""
    app.router.add_get("/sim/cgi-bin/token", cgi_token)
    app.router.add_post("/sim/cgi-bin/message/custom/send", cgi_custom_send)
    app.router.add_post("/sim/cgi-bin/message/template/send", cgi_template_send)
    app.router.add_get("/sim/cgi-bin/media/get", cgi_media_get)
    app.router.add_post("/sim/cgi-bin/menu/create", cgi_menu_create)
