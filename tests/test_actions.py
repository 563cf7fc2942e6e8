"""The knowledge-base actions, with a real Tracker, CollectingDispatcher and database."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions import actions as kb_actions
from actions.actions import ASK_CROP, NO_ANSWER, ActionAnswerFromKB, ActionKBFeedback
from bot import db
from bot.kb_answer import HANDOFF_OFFER, THANKS
from bot.kb_cli import load_into
from bot.kb_models import KbCard, KbFeedback
from bot.rasa_client import SOURCE_KEY


@pytest.fixture(autouse=True)
def kb_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database with the curated cards loaded, as `ketepai run` leaves it."""
    load_into(sqlite_url)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    kb_actions.live.cache_clear()
    return sqlite_url


def tracker(
    text: str,
    intent: str,
    entities: list[dict[str, Any]] | None = None,
    last_card: str | None = None,
) -> Tracker:
    return Tracker.from_dict(
        {
            "sender_id": "farmer",
            "slots": {"crop": None, "pest_disease": None, "last_card": last_card},
            "latest_message": {
                "text": text,
                "intent": {"name": intent, "confidence": 0.9},
                "entities": entities or [],
            },
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        }
    )


async def run(t: Tracker, action: Action | None = None) -> tuple[list[dict], CollectingDispatcher]:
    dispatcher = CollectingDispatcher()
    events = await (action or ActionAnswerFromKB()).run(dispatcher, t, {})
    return events, dispatcher


async def test_answers_the_first_question_naming_crop_and_problem() -> None:
    events, dispatcher = await run(
        tracker(
            "猕猴桃叶子上有褐色斑点怎么办",
            "ask_disease",
            [{"entity": "crop", "value": "猕猴桃", "start": 0, "end": 3}],
        )
    )
    [message] = dispatcher.messages
    assert "猕猴桃" in message["text"] and "褐斑病" in message["text"]
    assert "回复1有用，2没解决，3看完整防治方法" in message["text"]
    assert message["custom"][SOURCE_KEY] == "kb:kiwi-brown-spot"
    assert SlotSet("crop", "猕猴桃") in events and SlotSet("last_card", "kiwi-brown-spot") in events


async def test_alias_in_the_text_is_enough() -> None:
    _, dispatcher = await run(tracker("奇异果枝干上流红水是溃疡病吗", "ask_disease"))
    assert "溃疡病" in dispatcher.messages[0]["text"]


async def test_no_crop_and_no_pest_asks_for_the_crop() -> None:
    events, dispatcher = await run(tracker("叶子卷了怎么回事", "ask_disease"))
    assert dispatcher.messages[0]["text"] == ASK_CROP
    assert SlotSet("crop", None) in events


async def test_nothing_fitting_says_so_honestly() -> None:
    events, dispatcher = await run(
        tracker(
            "猕猴桃今年卖多少钱一斤", "ask_cultivation", [{"entity": "crop", "value": "猕猴桃"}]
        )
    )
    assert dispatcher.messages[0]["text"] == NO_ANSWER
    assert dispatcher.messages[0]["custom"][SOURCE_KEY] == "kb:none"
    assert SlotSet("last_card", None) in events


@pytest.mark.parametrize(
    ("reply", "intent", "helpful"), [("1", "affirm", True), ("2", "deny", False)]
)
async def test_feedback_is_recorded_against_the_card(
    kb_db: str, reply: str, intent: str, helpful: bool
) -> None:
    events, dispatcher = await run(
        tracker(reply, intent, last_card="kiwi-canker"), ActionKBFeedback()
    )
    assert dispatcher.messages[0]["text"] == (THANKS if helpful else HANDOFF_OFFER)
    assert "转人工" in dispatcher.messages[0]["text"] or helpful
    assert events == [SlotSet("last_card", None)]
    engine = db.make_engine(kb_db)
    with db.make_sessionmaker(engine)() as session:
        [fb] = session.execute(select(KbFeedback)).scalars().all()
        row = session.get(KbCard, "kiwi-canker")
    engine.dispose()
    assert (fb.card_id, fb.helpful, fb.sender) == ("kiwi-canker", helpful, "farmer")
    assert (row.helpful, row.not_helpful) == ((1, 0) if helpful else (0, 1))


async def test_three_shows_the_full_measures_and_keeps_the_card() -> None:
    events, dispatcher = await run(tracker("3", "inform", last_card="kiwi-canker"))
    text = dispatcher.messages[0]["text"]
    assert "防治方法" in text and "1. 农业：" in text
    assert dispatcher.messages[0]["custom"][SOURCE_KEY] == "kb:kiwi-canker:details"
    assert events == []


async def test_after_a_clarifying_question_a_digit_picks_the_card() -> None:
    events, dispatcher = await run(
        tracker("2", "deny", last_card="?kiwi-brown-spot|kiwi-canker"), ActionKBFeedback()
    )
    assert "溃疡病" in dispatcher.messages[0]["text"]
    assert events == [SlotSet("last_card", "kiwi-canker")]


async def test_a_digit_out_of_place_records_nothing(kb_db: str) -> None:
    events, dispatcher = await run(tracker("1", "affirm"), ActionKBFeedback())
    assert events == [] and dispatcher.messages[0]["custom"][SOURCE_KEY] == "bot:no_pending_card"


def test_the_index_is_built_at_start_only_under_ketepai_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.delenv("KTP_WARM_KB", raising=False)
    assert kb_actions.warm_at_start() is False
    assert kb_actions.live()._snapshot is None  # a plain import builds nothing
    monkeypatch.setenv("KTP_WARM_KB", "1")
    assert kb_actions.warm_at_start() is True
    deadline = time.monotonic() + 60
    while kb_actions.live()._snapshot is None and time.monotonic() < deadline:
        time.sleep(0.05)
    snap = kb_actions.live()._snapshot
    assert snap is not None and len(snap.retriever.cards) >= 200
