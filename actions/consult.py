"""Consultations completed over two messages: the question first, the crop when asked for it.

`action_answer_kb` asks 「请问是什么作物？」 when a question names none. The farmer's reply
(「猕猴桃」, intent `inform`) carries only the crop, so answering from that message alone would
search the knowledge base for 「猕猴桃」. This action answers the pending question instead: the
latest consultation message, with the crop now known.
"""

from __future__ import annotations

import copy
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.actions import ActionAnswerFromKB

CONSULT_PREFIX = "ask_"
# Only a question this recent counts as pending (user turns back, the crop answer included).
PENDING_WITHIN = 3


def pending_question(tracker: Tracker) -> dict[str, Any] | None:
    """The parse data of the latest consultation message among the recent user turns."""
    seen = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        seen += 1
        if seen > PENDING_WITHIN:
            return None
        parse = event.get("parse_data") or {}
        if str((parse.get("intent") or {}).get("name") or "").startswith(CONSULT_PREFIX):
            return dict(parse, text=event.get("text") or parse.get("text") or "")
    return None


def _crops(parse: dict[str, Any]) -> list[str]:
    return [str(e.get("value")) for e in parse.get("entities") or [] if e.get("entity") == "crop"]


def completes(pending: dict[str, Any], latest: dict[str, Any]) -> bool:
    """Whether `latest` names the crop the pending question lacked."""
    return bool(_crops(latest)) and not _crops(pending)


def merged_message(pending: dict[str, Any], latest: dict[str, Any]) -> dict[str, Any]:
    """The pending question with the entities of the latest message added (the crop)."""
    merged = copy.deepcopy(pending)
    merged["entities"] = [*(pending.get("entities") or []), *(latest.get("entities") or [])]
    return merged


class ActionAnswerPending(Action):
    """Answers the pending consultation now that the farmer has named the crop."""

    def name(self) -> str:
        return "action_answer_pending"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        kb = ActionAnswerFromKB()
        latest = tracker.latest_message or {}
        pending = pending_question(tracker)
        if pending is None or not completes(pending, latest):
            # Not the crop we asked for (「详细」, a bare 3, a new fact): the KB action decides.
            return await kb.run(dispatcher, tracker, domain)
        view = tracker.copy()
        view.latest_message = merged_message(pending, latest)
        return await kb.run(dispatcher, view, domain)
