"""Talks to the Rasa server over HTTP on 127.0.0.1 (REST channel and HTTP API)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Custom payload key an action uses to say where its answer came from (e.g. "kb:kiwi-canker").
SOURCE_KEY = "ketepai_source"


class RasaUnavailable(Exception):
    """Rasa did not answer (down, erroring or too slow)."""


@dataclass
class BotTurn:
    """What Rasa made of one farmer message."""

    texts: list[str]
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    source: str = "bot"
    elapsed_ms: int = 0

    @property
    def reply(self) -> str:
        """All bot texts joined, as one passive reply."""
        return "\n\n".join(t for t in self.texts if t)


class RasaClient:
    """An aiohttp client for one Rasa server."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._params = {"token": token} if token else {}
        self._channel = True  # our channel (bot/rasa_channel.py) until Rasa says 404

    async def send(
        self,
        sender: str,
        text: str,
        timeout_s: float,
        metadata: dict[str, Any] | None = None,
    ) -> BotTurn:
        """Send a farmer's text to Rasa; the answer and the parse of the message.

        Through our channel (bot/rasa_channel.py) both come in one round trip. When Rasa has no
        such channel (404) or did not capture the parse, the REST channel and the tracker are
        used, as before, at the cost of a second request.
        """
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        payload: dict[str, Any] = {"sender": sender, "message": text}
        if metadata:
            payload["metadata"] = metadata
        try:
            parse: dict[str, Any] | None = None
            messages: list[dict[str, Any]] | None = None
            if self._channel:
                async with self._session.post(
                    f"{self._base}/webhooks/ketepai/webhook", json=payload, timeout=timeout
                ) as resp:
                    if resp.status == 404:
                        self._channel = False
                    elif resp.status != 200:
                        raise RasaUnavailable(f"rasa answered HTTP {resp.status}")
                    else:
                        body = await resp.json()
                        messages = list(body.get("messages") or [])
                        parse = body.get("parse")
            if messages is None:
                async with self._session.post(
                    f"{self._base}/webhooks/rest/webhook", json=payload, timeout=timeout
                ) as resp:
                    if resp.status != 200:
                        raise RasaUnavailable(f"rasa answered HTTP {resp.status}")
                    messages = await resp.json()
            turn = BotTurn(texts=[])
            for m in messages:
                if m.get("text"):
                    turn.texts.append(m["text"])
                custom = m.get("custom")
                if isinstance(custom, dict) and custom.get(SOURCE_KEY):
                    turn.source = str(custom[SOURCE_KEY])
            if isinstance(parse, dict):
                _fill_parse(turn, parse)
            else:
                remaining = max(0.2, timeout_s - (time.perf_counter() - started))
                await self._read_parse(sender, turn, remaining)
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
            raise RasaUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        turn.elapsed_ms = round((time.perf_counter() - started) * 1000)
        return turn

    async def _read_parse(self, sender: str, turn: BotTurn, timeout_s: float) -> None:
        """Fill intent, confidence and entities from the tracker's latest message."""
        async with self._session.get(
            f"{self._base}/conversations/{sender}/tracker",
            params={**self._params, "include_events": "NONE"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if resp.status != 200:
                return  # the answer stands; only the record lacks the parse
            tracker = await resp.json()
        _fill_parse(turn, tracker.get("latest_message") or {})

    async def form_state(
        self, sender: str, timeout_s: float = 2.0
    ) -> tuple[str | None, str | None]:
        """(active loop, requested slot) of a conversation: which form question it waits on.

        Read only for photos and locations (a text message never asks), so that a photo sent
        when the consultation form asks for one fills the form's slot. Raises RasaUnavailable.
        """
        try:
            async with self._session.get(
                f"{self._base}/conversations/{sender}/tracker",
                params={**self._params, "include_events": "NONE"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise RasaUnavailable(f"rasa answered HTTP {resp.status}")
                tracker = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RasaUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        loop = (tracker.get("active_loop") or {}).get("name")
        slot = (tracker.get("slots") or {}).get("requested_slot")
        return (str(loop) if loop else None), (str(slot) if slot else None)

    async def add_event(self, sender: str, event: dict[str, Any], timeout_s: float = 5.0) -> bool:
        """Append an event (e.g. {"event": "pause"}) to a conversation's tracker; True if done."""
        try:
            async with self._session.post(
                f"{self._base}/conversations/{sender}/tracker/events",
                params={**self._params, "include_events": "NONE"},
                json=event,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def status(self, timeout_s: float = 2.0) -> bool:
        """True when the Rasa server answers and has a model loaded."""
        try:
            async with self._session.get(
                f"{self._base}/status",
                params=self._params,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    return False
                body = await resp.json()
                return bool(body.get("model_file"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False


def _fill_parse(turn: BotTurn, parse: dict[str, Any]) -> None:
    """Intent, confidence and entities of a Rasa parse, as a service record keeps them."""
    intent = parse.get("intent") or {}
    turn.intent = intent.get("name")
    turn.confidence = intent.get("confidence")
    turn.entities = [
        {k: e.get(k) for k in ("entity", "value", "start", "end", "extractor") if k in e}
        for e in parse.get("entities") or []
    ]
