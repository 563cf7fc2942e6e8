"""A WeChat stand-in for development: a phone-like chat page and the WeChat API the bot calls.

The page posts what a person types to `/sim/api/send`, which signs it exactly as WeChat does and
POSTs it to this gateway's `/wechat`, retrying like WeChat (5 s, three tries, same MsgId). The
bot's customer-service pushes land in `/sim/cgi-bin/message/custom/send` and are listed by
`GET /sim/outbox?openid=X`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import xmltodict
from aiohttp import web
from wechatpy.crypto import WeChatCrypto

from bot.app import SETTINGS
from bot.wechat import sign

STATIC = Path(__file__).with_name("static")
OFFICIAL_ACCOUNT = "gh_ketepai_sim"
WECHAT_TIMEOUT_S = 5.0
WECHAT_TRIES = 3
UNAVAILABLE = "该公众号暂时无法提供服务，请稍后再试"


@dataclass
class SimState:
    """Tokens issued and messages pushed, in memory for the life of the process."""

    tokens: set[str] = field(default_factory=set)
    outbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    msg_seq: int = field(default_factory=lambda: int(time.time() * 1000) * 1000)


SIM = web.AppKey("sim", SimState)


def text_message_xml(openid: str, text: str, msg_id: int, create_time: int) -> str:
    """The XML WeChat POSTs for a farmer's text message."""
    return xmltodict.unparse(
        {
            "xml": {
                "ToUserName": OFFICIAL_ACCOUNT,
                "FromUserName": openid,
                "CreateTime": str(create_time),
                "MsgType": "text",
                "Content": text,
                "MsgId": str(msg_id),
            }
        },
        full_document=False,
    )


def signed_query(token: str, timestamp: str, nonce: str, openid: str) -> dict[str, str]:
    """The query string WeChat adds to a plaintext POST."""
    return {
        "signature": sign(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": openid,
    }


async def _deliver(app: web.Application, openid: str, xml: str) -> dict[str, Any]:
    """POST one message to our /wechat as WeChat would, with WeChat's timeout and retries."""
    settings = app[SETTINGS]
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    params = signed_query(settings.wechat_token, timestamp, nonce, openid)
    body = xml
    crypto = None
    if settings.encoding_aes_key:
        crypto = WeChatCrypto(settings.wechat_token, settings.encoding_aes_key, settings.app_id)
        body = crypto.encrypt_message(xml, nonce, timestamp)
        params["encrypt_type"] = "aes"
        params["msg_signature"] = xmltodict.parse(body)["xml"]["MsgSignature"]
    url = f"{settings.self_url}/wechat"
    tries: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(WECHAT_TRIES):
            started = time.perf_counter()
            try:
                async with http.post(
                    url,
                    params=params,
                    data=body.encode("utf-8"),
                    timeout=aiohttp.ClientTimeout(total=WECHAT_TIMEOUT_S),
                ) as resp:
                    raw = await resp.text()
                    ms = round((time.perf_counter() - started) * 1000)
                    tries.append({"status": resp.status, "ms": ms})
                    if resp.status != 200:
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                tries.append({"error": exc.__class__.__name__, "ms": WECHAT_TIMEOUT_S * 1000})
                continue
            reply = _reply_content(raw, crypto, nonce, timestamp)
            return {"reply": reply, "tries": tries}
    return {"reply": None, "error": UNAVAILABLE, "tries": tries}


def _reply_content(raw: str, crypto: WeChatCrypto | None, nonce: str, timestamp: str) -> str | None:
    if raw.strip() in {"", "success"}:
        return None
    if crypto is not None:
        envelope = xmltodict.parse(raw)["xml"]
        raw = crypto.decrypt_message(
            raw, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]
        )
    doc = xmltodict.parse(raw)["xml"]
    content = doc.get("Content")
    return str(content) if content is not None else None


async def page(_request: web.Request) -> web.StreamResponse:
    """GET /sim: the phone-like chat page."""
    return web.FileResponse(STATIC / "sim.html")


async def api_send(request: web.Request) -> web.StreamResponse:
    """POST /sim/api/send {openid, text}: deliver as WeChat and return the passive reply."""
    try:
        payload = await request.json()
        openid = str(payload["openid"]).strip()
        text = str(payload["text"]).strip()
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="expected JSON {openid, text}") from None
    if not openid or not text:
        raise web.HTTPBadRequest(text="openid and text are required")
    state = request.app[SIM]
    state.msg_seq += 1
    xml = text_message_xml(openid, text, state.msg_seq, int(time.time()))
    return web.json_response(await _deliver(request.app, openid, xml))


async def cgi_token(request: web.Request) -> web.StreamResponse:
    """GET /sim/cgi-bin/token: an access_token for the right appid and secret."""
    settings = request.app[SETTINGS]
    q = request.query
    ok_id = hmac.compare_digest(q.get("appid", ""), settings.app_id)
    ok_secret = hmac.compare_digest(q.get("secret", ""), settings.app_secret)
    if q.get("grant_type") != "client_credential" or not (ok_id and ok_secret):
        return web.json_response({"errcode": 40013, "errmsg": "invalid appid or secret"})
    token = secrets.token_urlsafe(32)
    request.app[SIM].tokens.add(token)
    return web.json_response({"access_token": token, "expires_in": 7200})


async def cgi_custom_send(request: web.Request) -> web.StreamResponse:
    """POST /sim/cgi-bin/message/custom/send: record a customer-service push."""
    state = request.app[SIM]
    if request.query.get("access_token") not in state.tokens:
        return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
    try:
        body = await request.json()
        touser, msgtype = str(body["touser"]), str(body["msgtype"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"errcode": 44002, "errmsg": "empty post data"})
    item: dict[str, Any] = {"msgtype": msgtype, "at": datetime.now(timezone.utc).isoformat()}
    if msgtype == "text":
        item["content"] = body.get("text", {}).get("content", "")
    else:
        item.update({k: v for k, v in body.items() if k not in {"touser", "msgtype"}})
    state.outbox.setdefault(touser, []).append(item)
    state.calls.append({"api": "message/custom/send", "touser": touser, "msgtype": msgtype})
    return web.json_response({"errcode": 0, "errmsg": "ok"})


async def outbox(request: web.Request) -> web.StreamResponse:
    """GET /sim/outbox?openid=X: everything pushed to X, oldest first."""
    openid = request.query.get("openid")
    if not openid:
        raise web.HTTPBadRequest(text="openid is required")
    return web.json_response(request.app[SIM].outbox.get(openid, []))


def setup(app: web.Application) -> None:
    """Mount the simulator on the gateway."""
    app[SIM] = SimState()
    app.router.add_get("/sim", page)
    app.router.add_post("/sim/api/send", api_send)
    app.router.add_get("/sim/cgi-bin/token", cgi_token)
    app.router.add_post("/sim/cgi-bin/message/custom/send", cgi_custom_send)
    app.router.add_get("/sim/outbox", outbox)
