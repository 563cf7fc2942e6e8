"""The knowledge-base action, with a real Tracker and CollectingDispatcher."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.actions import ASK_CROP, NO_ANSWER, ActionAnswerFromKB
from bot.rasa_client import SOURCE_KEY


def tracker(text: str, intent: str, entities: list[dict[str, Any]] | None = None) -> Tracker:
    return Tracker.from_dict(
        {
            "sender_id": "farmer",
            "slots": {"crop": None, "pest_disease": None},
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


async def run(t: Tracker) -> tuple[list[dict[str, Any]], CollectingDispatcher]:
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerFromKB().run(dispatcher, t, {})
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
    assert message["custom"][SOURCE_KEY] == "kb:kiwi-brown-spot"
    assert SlotSet("crop", "猕猴桃") in events


async def test_alias_in_the_text_is_enough() -> None:
    _, dispatcher = await run(tracker("奇异果枝干上流红水是溃疡病吗", "ask_disease"))
    assert "溃疡病" in dispatcher.messages[0]["text"]


async def test_no_crop_and_no_pest_asks_for_the_crop() -> None:
    events, dispatcher = await run(tracker("叶子卷了怎么回事", "ask_disease"))
    assert dispatcher.messages[0]["text"] == ASK_CROP
    assert SlotSet("crop", None) in events


async def test_nothing_fitting_says_so_honestly() -> None:
    _, dispatcher = await run(
        tracker(
            "猕猴桃的价格今年怎么样", "ask_cultivation", [{"entity": "crop", "value": "猕猴桃"}]
        )
    )
    assert dispatcher.messages[0]["text"] == NO_ANSWER
    assert dispatcher.messages[0]["custom"][SOURCE_KEY] == "kb:none"
