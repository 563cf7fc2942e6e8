"""WeChat protocol: signatures, parsing inbound XML and rendering passive replies.

Parsing, replies and AES crypto come from wechatpy; signatures are compared here in constant
time (wechatpy compares with `!=`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
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

    @property
    def dedupe_key(self) -> str:
        """MsgId for messages; FromUserName+CreateTime for events (WeChat reuses both on retry)."""
        if self.msg_id:
            return self.msg_id
        return f"{self.openid}:{self.create_time}"


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
    text: str | None = None
    if msg.type == "text":
        text = (msg.content or "").strip()
    elif msg.type == "voice":
        text = (getattr(msg, "recognition", None) or "").strip() or None
    try:
        create_time = int(msg._data.get("CreateTime") or 0)
    except (TypeError, ValueError):
        raise BadRequest("bad CreateTime") from None
    msg_id = str(msg.id) if getattr(msg, "id", None) else None
    msg_type = msg.type
    if msg_type == "event":
        msg_type = f"event:{getattr(msg, 'event', 'unknown')}"
    return Inbound(msg, msg.source, msg_type, msg_id, text, create_time)


def render_text_reply(inbound: Inbound, content: str) -> str:
    """A passive text reply to `inbound`, as XML."""
    return TextReply(message=inbound.message, content=content).render()


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

    def encrypt(self, xml: str, nonce: str, timestamp: str) -> str:
        """Encrypt a reply for safe mode."""
        return str(self._crypto.encrypt_message(xml, nonce, timestamp))
