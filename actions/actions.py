"""Custom actions: answer a consultation from the knowledge base, and the replies that follow it.

Slot `last_card` carries the state between turns (see kb/README.md, "Dialogue protocol"):
"<card id>" after an answer, "?<id1>|<id2>" after a clarifying question, empty otherwise.
"""

from __future__ import annotations

import asyncio
import os
import re
from functools import lru_cache
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.kb_answer import (
    HANDOFF_OFFER,
    NOT_SURE,
    THANKS,
    decide,
    render_clarify,
    render_details,
    render_summary,
)
from bot.kb_faq import LiveFaq
from bot.kb_live import LiveKnowledge
from bot.kb_store import get_card, record_feedback
from bot.rasa_client import SOURCE_KEY

ASK_CROP = "请问是什么作物（或什么畜禽、鱼）？比如「猕猴桃」「水稻」「猪」。"
NO_ANSWER = NOT_SURE
NOTHING_PENDING = "好的。请直接说说您的问题，比如「猕猴桃叶子上有褐色斑点怎么办」。"
PICK_ONE = "请回复1或2选一种；都不像的话，请说说哪个部位、什么样子。"
REPLY = re.compile(r"^\s*(?:回复|选)?\s*([123１２３])\s*[。.！!]?\s*$")
DETAILS_WORDS = ("详细", "防治方法", "怎么防治", "具体")


@lru_cache(maxsize=1)
def live() -> LiveKnowledge:
    """The knowledge base of this action server (made on first use)."""
    return LiveKnowledge(os.environ.get("DATABASE_URL") or "sqlite:///var/ketepai.db")


def warm_at_start() -> bool:
    """Under `ketepai run` (KTP_WARM_KB=1) build the card index in the background as the action
    server starts, so the first farmer's question does not wait for it (~3.5 s with a 3,200-card
    import). Not on a plain import (tests, tools)."""
    if os.environ.get("KTP_WARM_KB") != "1":
        return False
    live().warm()
    return True


warm_at_start()


@lru_cache(maxsize=1)
def faqs() -> LiveFaq:
    """The FAQs of this action server (on the knowledge base's database)."""
    return LiveFaq(live().sessions())


def _faq_card(kb: LiveKnowledge, text: str) -> Any:
    """The card of the FAQ whose variant `text` matches, if any."""
    hit = faqs().match(text)
    if hit is None:
        return None
    with kb.sessions()() as session:
        return get_card(session, hit.card_id)


def _utter(dispatcher: CollectingDispatcher, text: str, source: str, **extra: Any) -> None:
    dispatcher.utter_message(text=text, json_message={SOURCE_KEY: source, **extra})


def reply_number(text: str) -> int | None:
    """1, 2 or 3 when the message is just that number (「1」「回复2」「３」)."""
    m = REPLY.match(text or "")
    return int(m.group(1).translate(str.maketrans("１２３", "123"))) if m else None


def follow_up(
    dispatcher: CollectingDispatcher, tracker: Tracker, kb: LiveKnowledge, details: bool = False
) -> list[dict[str, Any]]:
    """A reply to our last turn: pick 1/2 after a question, or 1/2/3 after an answer."""
    state = str(tracker.get_slot("last_card") or "")
    message = tracker.latest_message or {}
    text = str(message.get("text") or "")
    intent = (message.get("intent") or {}).get("name")
    number = reply_number(text)
    if state.startswith("?"):
        ids = state[1:].split("|")
        if number in (1, 2) and number <= len(ids):
            with kb.sessions()() as session:
                card = get_card(session, ids[number - 1])
            if card is not None:
                _utter(dispatcher, render_summary(card), f"kb:{card.id}")
                return [SlotSet("last_card", card.id)]
        _utter(dispatcher, PICK_ONE, "kb:clarify")
        return []
    if not state:
        _utter(dispatcher, NOTHING_PENDING, "bot:no_pending_card")
        return []
    if details or number == 3 or (number is None and any(w in text for w in DETAILS_WORDS)):
        with kb.sessions()() as session:
            card = get_card(session, state)
        if card is None:
            card = next((c for c in kb.current().retriever.cards if c.id == state), None)
        if card is None:
            _utter(dispatcher, NOTHING_PENDING, "bot:no_pending_card")
            return [SlotSet("last_card", None)]
        _utter(dispatcher, render_details(card), f"kb:{card.id}:details")
        return []
    helpful = number == 1 or (number is None and intent == "affirm")
    unhelpful = number == 2 or (number is None and intent == "deny")
    if not (helpful or unhelpful):
        _utter(dispatcher, NOTHING_PENDING, "bot:no_pending_card")
        return []
    with kb.sessions()() as session, session.begin():
        record_feedback(
            session, card_id=state, sender=tracker.sender_id, helpful=helpful, text=text[:200]
        )
    _utter(dispatcher, THANKS if helpful else HANDOFF_OFFER, f"kb:feedback:{state}")
    return [SlotSet("last_card", None)]


class ActionAnswerFromKB(Action):
    """Find the knowledge-base card for the farmer's question and answer with it."""

    def name(self) -> str:
        return "action_answer_kb"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        kb = live()
        message = tracker.latest_message or {}
        text = message.get("text") or ""
        if tracker.get_slot("last_card") and (
            reply_number(text) or any(w == text.strip() for w in DETAILS_WORDS)
        ):
            # A bare 「1」 or 「详细」 routed here (e.g. as `inform`): it answers our last turn.
            return await asyncio.to_thread(follow_up, dispatcher, tracker, kb)
        faq_card = await asyncio.to_thread(_faq_card, kb, text)
        if faq_card is not None:  # an admin's FAQ: its card, before any retrieval
            _utter(dispatcher, render_summary(faq_card), f"kb:{faq_card.id}", faq=True)
            return [SlotSet("last_card", faq_card.id)]
        snap = await asyncio.to_thread(kb.current)
        names = snap.names
        intent = (message.get("intent") or {}).get("name") or ""
        category = intent.removeprefix("ask_") if intent.startswith("ask_") else None

        crop = _canonical(
            next(tracker.get_latest_entity_values("crop"), None), names.canonical_crop
        )
        crop = crop or names.find_crop(text) or tracker.get_slot("crop")
        pest = _canonical(
            next(tracker.get_latest_entity_values("pest_disease"), None), names.canonical_pest
        )
        pest = pest or names.find_pest(text)
        events = [SlotSet("crop", crop), SlotSet("pest_disease", pest)]

        if not crop and not pest:
            _utter(dispatcher, ASK_CROP, "bot:ask_crop")
            return events
        result = snap.retriever.search(text=text, crop=crop, pest=pest, category=category)
        decision = decide(result)
        score = round(decision.confidence, 3)
        if decision.kind == "answer":
            card = decision.cards[0]
            _utter(dispatcher, render_summary(card), f"kb:{card.id}", score=score)
            return [*events, SlotSet("last_card", card.id)]
        if decision.kind == "clarify":
            ids = "|".join(c.id for c in decision.cards)
            question = render_clarify(decision.cards, crop)
            _utter(dispatcher, question, "kb:clarify", score=score)
            return [*events, SlotSet("last_card", f"?{ids}")]
        _utter(dispatcher, NO_ANSWER, "kb:none", score=score)
        return [*events, SlotSet("last_card", None)]


class ActionKBFeedback(Action):
    """After an answer: 1 有用 / 2 没解决 (recorded against the card), 3 details; after a
    clarifying question: 1 or 2 picks the problem."""

    def name(self) -> str:
        return "action_kb_feedback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(follow_up, dispatcher, tracker, live())


class ActionKBDetails(ActionKBFeedback):
    """「3」/「详细」 after an answer: the full control measures of the last card."""

    def name(self) -> str:
        return "action_kb_details"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(follow_up, dispatcher, tracker, live(), True)


def _canonical(value: Any, lookup: Any) -> str | None:
    if not value:
        return None
    return lookup(str(value)) or str(value)
