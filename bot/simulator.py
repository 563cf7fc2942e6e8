"""A WeChat stand-in for development: a phone-like chat page and the WeChat API the bot calls.

The page posts what a person does (text, photo, voice with or without recognition, location,
menu clicks, subscribe/scan) to `/sim/api/send`, which builds WeChat's XML, signs it (and
encrypts it in safe mode) exactly as WeChat does and POSTs it to this gateway's `/wechat`,
retrying like WeChat (5 s, three tries, same MsgId). `/sim/api/slow` makes the bot slow so the
push path shows. The bot's API calls land in `bot.sim_api`; pushes are listed by
`GET /sim/outbox?openid=X`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import xmltodict
from aiohttp import web
from wechatpy.crypto import WeChatCrypto

from bot import sim_api
from bot.app import EXTRA_DELAY, INBOUND_HOOK, SETTINGS
from bot.sim_api import SIM, SimState
from bot.wechat import sign

STATIC = Path(__file__).with_name("static")
OFFICIAL_ACCOUNT = "gh_ketepai_sim"
WECHAT_TIMEOUT_S = 5.0
WECHAT_TRIES = 3
UNAVAILABLE = "该公众号暂时无法提供服务，请稍后再试"
# A 1x1 PNG and an AMR header: enough for the bot to download and store.
SAMPLE_IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SAMPLE_VOICE = b"#!AMR\n" + bytes(64)
__all__ = ["SIM", "SimState", "message_xml", "text_message_xml"]


def message_xml(openid: str, fields: dict[str, Any], create_time: int) -> str:
    """The XML WeChat POSTs for a farmer's message or event, with `fields` after the header."""
    doc = {"ToUserName": OFFICIAL_ACCOUNT, "FromUserName": openid, "CreateTime": str(create_time)}
    doc.update({k: str(v) for k, v in fields.items() if v is not None})
    return xmltodict.unparse({"xml": doc}, full_document=False)


def text_message_xml(openid: str, text: str, msg_id: int, create_time: int) -> str:
    """The XML WeChat POSTs for a farmer's text message."""
    return message_xml(openid, {"MsgType": "text", "Content": text, "MsgId": msg_id}, create_time)


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


def _fields(state: SimState, payload: dict[str, Any]) -> dict[str, Any]:
    """WeChat's fields for one simulated action (raises ValueError when it makes no sense)."""
    kind = str(payload.get("type") or "text")
    state.msg_seq += 1
    msg_id = state.msg_seq
    if kind == "text":
        text = str(payload.get("text") or "").strip()
        if not text:
            raise ValueError("text is required")
        return {"MsgType": "text", "Content": text, "MsgId": msg_id}
    if kind == "image":
        content = SAMPLE_IMAGE
        if payload.get("image_base64"):
            try:
                content = base64.b64decode(str(payload["image_base64"]), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("image_base64 is not base64") from None
        media_id = state.new_media(content, "image/jpeg")
        url = f"http://mmbiz.qpic.cn/sim/{media_id}"
        return {"MsgType": "image", "PicUrl": url, "MediaId": media_id, "MsgId": msg_id}
    if kind == "voice":
        media_id = state.new_media(SAMPLE_VOICE, "audio/amr")
        rec = str(payload.get("recognition") or "").strip() or None
        return {
            "MsgType": "voice",
            "MediaId": media_id,
            "Format": "amr",
            "Recognition": rec,
            "MsgId": msg_id,
        }
    if kind == "location":
        return {
            "MsgType": "location",
            "Location_X": payload.get("lat", "34.160271"),
            "Location_Y": payload.get("lon", "108.216911"),
            "Scale": 15,
            "Label": payload.get("label", "陕西省西安市周至县楼观镇周一村3组"),
            "MsgId": msg_id,
        }
    if kind == "link":
        title, url = payload.get("title", "猕猴桃溃疡病防治"), payload.get("url", "http://x.cn/a")
        return {"MsgType": "link", "Title": title, "Description": "", "Url": url, "MsgId": msg_id}
    if kind == "event":
        event = str(payload.get("event") or "")
        if event not in {"subscribe", "unsubscribe", "CLICK", "VIEW", "SCAN"}:
            raise ValueError("event must be subscribe, unsubscribe, CLICK, VIEW or SCAN")
        return {"MsgType": "event", "Event": event, "EventKey": payload.get("key")}
    raise ValueError("type must be text, image, voice, location, link or event")


async def api_send(request: web.Request) -> web.StreamResponse:
    """POST /sim/api/send {openid, type, ...}: deliver as WeChat and return the passive reply."""
    try:
        payload = await request.json()
        openid = str(payload["openid"]).strip()
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="expected JSON {openid, type, ...}") from None
    if not openid or not isinstance(payload, dict):
        raise web.HTTPBadRequest(text="openid is required")
    state = request.app[SIM]
    try:
        fields = _fields(state, payload)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    # Events carry no MsgId; WeChat dedupes them by FromUserName+CreateTime, so they must differ.
    create_time = int(time.time())
    if "MsgId" not in fields:
        create_time = max(create_time, state.event_times.get(openid, 0) + 1)
        state.event_times[openid] = create_time
    xml = message_xml(openid, fields, create_time)
    return web.json_response(await _deliver(request.app, openid, xml))


async def api_slow(request: web.Request) -> web.StreamResponse:
    """POST /sim/api/slow {seconds}: delay every bot turn, to show the acknowledge-and-push path."""
    try:
        seconds = float((await request.json())["seconds"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="expected JSON {seconds}") from None
    request.app[SIM].slow_s = max(0.0, min(seconds, 30.0))
    return web.json_response({"slow_s": request.app[SIM].slow_s})


async def page(_request: web.Request) -> web.StreamResponse:
    """GET /sim: the phone-like chat page."""
    return web.FileResponse(STATIC / "sim.html")


async def outbox(request: web.Request) -> web.StreamResponse:
    """GET /sim/outbox?openid=X: everything pushed to X, oldest first."""
    openid = request.query.get("openid")
    if not openid:
        raise web.HTTPBadRequest(text="openid is required")
    return web.json_response(request.app[SIM].outbox.get(openid, []))


def setup(app: web.Application) -> None:
    """Mount the simulator on the gateway."""
    state = SimState()
    app[SIM] = state
    app[INBOUND_HOOK] = state.saw_inbound
    app[EXTRA_DELAY] = lambda: state.slow_s
    app.router.add_get("/sim", page)
    app.router.add_post("/sim/api/send", api_send)
    app.router.add_post("/sim/api/slow", api_slow)
    app.router.add_get("/sim/outbox", outbox)
    sim_api.setup(app)
