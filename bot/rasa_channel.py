"""The gateway's own Rasa input channel: the bot's answer and the NLU parse in one round trip.

Rasa's REST channel returns only the bot's messages, so the gateway used to read the parse
(intent, confidence, entities, for the service record) with a second request,
`GET /conversations/<id>/tracker`, which makes Rasa load, replay and serialise the whole
conversation again: about 9 ms of Rasa CPU per farmer message, measured. This channel answers

    POST /webhooks/ketepai/webhook  {"sender": ..., "message": ..., "metadata": {...}}
    -> {"messages": [...as the REST channel...], "parse": {"intent": ..., "entities": [...]}}

where `parse` is what Rasa's NLU made of this very message, captured by bot/rasa_speedups.py
(`MessageProcessor.parse_message` is wrapped to leave its result on the `UserMessage`). It is
null when the capture is not applied (Rasa started without `bot.rasa_main`); the gateway then
falls back to reading the tracker. Like the REST channel, a failure inside Rasa is logged and
answered with the messages collected so far, plus `"error"`.

Enabled in credentials.yml as `bot.rasa_channel.KetepaiInput`. Loopback only, like all of Rasa.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

log = logging.getLogger(__name__)

PARSE_ATTR = "ketepai_parse"


def parse_summary(parse: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parts of Rasa's parse that a service record keeps."""
    if not isinstance(parse, dict):
        return None
    return {"intent": parse.get("intent") or {}, "entities": parse.get("entities") or []}


class KetepaiInput(InputChannel):
    """REST-like channel that also returns the NLU parse of the message."""

    @classmethod
    def name(cls) -> str:
        return "ketepai"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("ketepai_webhook", __name__)

        @bp.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            body = request.json if isinstance(request.json, dict) else {}
            sender, text = body.get("sender"), body.get("message")
            if not isinstance(sender, str) or not sender or not isinstance(text, str):
                return response.json({"error": "sender and message are required"}, status=400)
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
            collector = CollectingOutputChannel()
            message = UserMessage(
                text, collector, sender, input_channel=self.name(), metadata=metadata
            )
            error = None
            try:
                await on_new_message(message)
            except Exception as exc:  # as Rasa's REST channel: log, answer what was collected
                log.exception("ketepai channel: message from %s failed", sender)
                error = exc.__class__.__name__
            return response.json(
                {
                    "messages": collector.messages,
                    "parse": parse_summary(getattr(message, PARSE_ATTR, None)),
                    "error": error,
                }
            )

        return bp
