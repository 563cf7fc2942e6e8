"""WeChat protocol: signatures, parsing inbound XML and rendering passive replies.

Parsing, replies and AES crypto come from wechatpy; signatures are compared here in constant
time (wechatpy compares with `!=`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.messages import BaseMessage
from wechatpy.replies import TextReply

MAX_BODY_BYTES = 64 * 1024  # WeChat messages are a few KB; anything larger is not WeChat.


class BadRequest(Exception):
    """The body is not a WeChat message we can read (answered with 400)."""


class Forbidden(Exception):
    """The request is not signed by WeChat, or is stale (answered with 403)."""


def sign(*parts: str) -> str:
    """WeChat's signature: sha1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324


def check_signature(
    token: str,
    signature: str | None,
    timestamp: str | None,
    nonce: str | None,
    *,
    replay_window_s: int | None = None,
    now: float | None = None,
) -> None:
    """Raise Forbidden unless `signature` signs (token, timestamp, nonce) and is fresh."""
    if not signature or not timestamp or not nonce:
        raise Forbidden("missing signature, timestamp or nonce")
    expected = sign(token, timestamp, nonce)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise Forbidden("bad signature")
    if replay_window_s is not None:
        try:
            sent = int(timestamp)
        except ValueError:
            raise Forbidden("bad timestamp") from None
        if abs((time.time() if now is None else now) - sent) > replay_window_s:
            raise Forbidden("stale timestamp")


def refuse_dangerous_xml(body: bytes) -> None:
    """Refuse bodies WeChat never sends: too large, or with a DTD (entity expansion attacks)."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("body too large")
    head = body[:MAX_BODY_BYTES].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise BadRequest("DTDs are not allowed")


@dataclass(frozen=True)
class Inbound:
    """A parsed inbound message with the fields the gateway uses."""

    message: BaseMessage
    openid: str
    msg_type: str
    msg_id: str | None
    text: str | None
    create_time: int
    # Photo, voice or video to download (MediaId expires after 3 days).
    media_id: str | None = None
    # What the service record keeps when `text` (what Rasa reads) is not the whole story.
    note: str | None = None
    event_key: str | None = None

    @property
    def dedupe_key(self) -> str:
        """MsgId for messages; FromUserName+CreateTime for events (WeChat reuses both on retry)."""
        if self.msg_id:
            return self.msg_id
        return f"{self.openid}:{self.create_time}"


_PROVINCE = re.compile(r"^.{2,10}?(?:省|自治区|特别行政区)")
_COUNTY = re.compile(r"^.*?(?:县|区|旗)")
_TOWNSHIP = re.compile(r"^.*?(?:镇|乡|街道|苏木)")


def coarsen_location(label: str | None, lat: str | None, lon: str | None) -> str:
    """A location cut to county/township and ~10 km (PIPL Art. 28: location is sensitive)."""
    place = ""
    if label:
        province = _PROVINCE.match(label)
        head = province.group(0) if province else ""
        rest = label[len(head) :]
        county = _COUNTY.match(rest)
        if county:
            town = _TOWNSHIP.match(rest[county.end() :])
            place = head + county.group(0) + (town.group(0) if town else "")
        else:
            town = _TOWNSHIP.match(rest)
            place = head + town.group(0) if town else ""
    try:
        coords = f"约 {float(lat or ''):.1f}, {float(lon or ''):.1f}"
    except ValueError:
        coords = ""
    return "位置：" + (place or "（未知地名）") + (f"（{coords}）" if coords else "")


def parse_inbound(xml: bytes | str) -> Inbound:
    """Parse a plaintext WeChat XML body; raise BadRequest when it is not one."""
    raw = xml if isinstance(xml, bytes) else xml.encode("utf-8")
    refuse_dangerous_xml(raw)
    try:
        msg = parse_message(raw.decode("utf-8"))
    except Exception as exc:  # xmltodict/expat raise many types
        raise BadRequest(f"malformed XML: {exc.__class__.__name__}") from None
    if msg is None or not getattr(msg, "source", None):
        raise BadRequest("not a WeChat message")
    data: dict[str, Any] = msg._data
    try:
        create_time = int(data.get("CreateTime") or 0)
    except (TypeError, ValueError):
        raise BadRequest("bad CreateTime") from None
    text: str | None = None
    note: str | None = None
    media_id: str | None = None
    event_key: str | None = None
    msg_type = str(data.get("MsgType") or msg.type)
    if msg.type == "text":
        text = (msg.content or "").strip()
    elif msg.type == "voice":
        text = (getattr(msg, "recognition", None) or "").strip() or None
        media_id = data.get("MediaId")
    elif msg.type in {"image", "video", "shortvideo"}:
        media_id = data.get("MediaId")
    elif msg.type == "location":
        note = coarsen_location(data.get("Label"), data.get("Location_X"), data.get("Location_Y"))
    elif msg.type == "link":
        note = f"链接：{data.get('Title') or ''} {data.get('Url') or ''}".strip()
    elif msg.type == "event" or msg_type == "event":
        event = str(data.get("Event") or "unknown")
        msg_type = f"event:{event.lower()}"[:32]
        key = data.get("EventKey")
        event_key = str(key) if key else None
    msg_id = str(data["MsgId"]) if data.get("MsgId") else None
    return Inbound(
        msg, msg.source, msg_type[:32], msg_id, text, create_time, media_id, note, event_key
    )


def render_text_reply(inbound: Inbound, content: str, create_time: int | None = None) -> str:
    """A passive text reply to `inbound`, as XML."""
    when = int(time.time()) if create_time is None else create_time
    return str(TextReply(message=inbound.message, content=content, time=when).render())


class _FixedRandom(PrpCrypto):
    """PrpCrypto with a chosen 16-byte prefix, for known-answer tests of encryption."""

    prefix = ""

    def get_random_string(self) -> str:
        return self.prefix


class SafeMode:
    """AES (safe/compatible mode) wrapper around wechatpy's crypto."""

    def __init__(self, token: str, encoding_aes_key: str, app_id: str) -> None:
        self._token = token
        self._crypto = WeChatCrypto(token, encoding_aes_key, app_id)

    def decrypt(self, body: bytes, msg_signature: str | None, timestamp: str, nonce: str) -> bytes:
        """Check msg_signature (constant time) and decrypt the body to plaintext XML."""
        refuse_dangerous_xml(body)
        import xmltodict

        try:
            envelope: dict[str, Any] = xmltodict.parse(body)["xml"]
            encrypt = envelope["Encrypt"]
        except Exception:
            raise BadRequest("malformed encrypted envelope") from None
        expected = sign(self._token, timestamp, nonce, encrypt)
        if not msg_signature or not hmac.compare_digest(expected.encode(), msg_signature.encode()):
            raise Forbidden("bad msg_signature")
        try:
            plain = self._crypto.decrypt_message(body.decode("utf-8"), expected, timestamp, nonce)
        except InvalidSignatureException:
            raise Forbidden("bad msg_signature") from None
        except Exception:
            raise BadRequest("cannot decrypt body") from None
        return plain.encode("utf-8") if isinstance(plain, str) else plain

    def encrypt(
        self, xml: str, nonce: str, timestamp: str, random_prefix: str | None = None
    ) -> str:
        """Encrypt a reply for safe mode (`random_prefix`: 16 chars, for known-answer tests)."""
        if random_prefix is None:
            return str(self._crypto.encrypt_message(xml, nonce, timestamp))
        if len(random_prefix) != 16:
            raise ValueError("random_prefix must be 16 characters")
        fixed = type("Fixed", (_FixedRandom,), {"prefix": random_prefix})
        return str(self._crypto._encrypt_message(xml, nonce, timestamp, crypto_class=fixed))
