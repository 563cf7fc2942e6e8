"""Handing a farmer's case to a person (科技特派员): the request the consultation form collected.

The request is kept in the conversation's tracker (slot `handoff`) and, by default, opened as a
case for the on-duty commissioner (actions/handoff_sink.py, issue 6); the farmer is told plainly
what happens next. Another back end: `set_sink()` with an object whose `submit()` stores the
request and returns a Receipt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import answers
from bot.rasa_client import SOURCE_KEY

HANDOFF_SLOT = "handoff"
# Slots the next request should ask afresh; crop and location usually stay the same. The phone
# number stays in the tracker only until a back end has stored it (issue 6 encrypts it at rest).
CLEARED_AFTER = ("problem", "photo", "form_failures")
CLEARED_WHEN_STORED = ("phone", "phone_consent")


@dataclass(frozen=True)
class HandoffRequest:
    """What a commissioner needs to take the case."""

    sender_id: str
    crop: str | None
    problem: str | None
    photo: str | None
    location: str | None
    phone: str | None  # digits, or None when the farmer did not leave one
    phone_consent: bool
    requested_at: str

    def public(self) -> dict[str, Any]:
        """The request as kept in the tracker: the phone masked (PIPL: minimal exposure)."""
        data = asdict(self)
        data["phone"] = answers.mask_phone(self.phone) if self.phone else None
        return data


@dataclass(frozen=True)
class Receipt:
    """What the handoff back end did with a request."""

    status: str  # "recorded" (kept in the service record only) or "ticket"
    reference: str | None = None  # a ticket number the farmer can quote
    expected: str | None = None  # when a reply can be expected, if the back end knows


class HandoffSink(Protocol):
    """Where handoff requests go (issue 6: tickets and commissioners)."""

    def submit(self, request: HandoffRequest) -> Receipt:
        """Store the request; may block (called in a thread)."""
        ...


class RecordOnlySink:
    """No ticket system yet: the request lives in the conversation's service record."""

    def submit(self, request: HandoffRequest) -> Receipt:
        """Nothing to store beyond the tracker."""
        return Receipt(status="recorded")


_sink: HandoffSink | None = None  # default: cases in the database (actions/handoff_sink.py)


def set_sink(sink: HandoffSink) -> None:
    """Install the handoff back end (called once at action-server start-up)."""
    global _sink
    _sink = sink


def current_sink() -> HandoffSink:
    """The installed back end; by default the database one, made on first use (no I/O here)."""
    if _sink is None:
        from actions.handoff_sink import DbHandoffSink

        set_sink(DbHandoffSink())
    assert _sink is not None
    return _sink


def summary(req: HandoffRequest) -> str:
    """The request read back to the farmer, so they can correct it."""
    photo = {
        None: "没有",
        answers.NONE_GIVEN: "没有",
        answers.PHOTO_SENT: answers.PHOTO_SENT,
        answers.PHOTO_LATER: answers.PHOTO_LATER,
    }.get(req.photo, "已收到")
    return (
        f"作物：{req.crop or '未说'}\n问题：{req.problem or '未说'}\n照片：{photo}\n"
        f"地点：{req.location or '未说'}\n电话：{answers.mask_phone(req.phone)}"
    )


def next_steps(receipt: Receipt, has_phone: bool) -> str:
    """What happens next, without promising what the system cannot do."""
    if receipt.status == "ticket" and receipt.reference:
        when = f"，{receipt.expected}" if receipt.expected else ""
        return f"已为您登记求助，编号 {receipt.reference}。负责的科技特派员会在这里回复您{when}。"
    contact = "或打电话给您" if has_phone else ""
    return (
        "已把您的求助记进服务记录。科技特派员查看后会在这个公众号里回复您" + contact + "，"
        "不是马上就有回复，请留意消息。情况紧急（比如大批死苗、死畜）请同时联系当地农技站或畜牧站。"
    )


class ActionHandoff(Action):
    """Records the consultation form's answers as a handoff request and tells the farmer."""

    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        phone = tracker.get_slot("phone")
        has_phone = bool(phone) and phone != answers.NONE_GIVEN
        request = HandoffRequest(
            sender_id=tracker.sender_id,
            crop=tracker.get_slot("crop"),
            problem=tracker.get_slot("problem"),
            photo=tracker.get_slot("photo"),
            location=tracker.get_slot("location"),
            phone=phone if has_phone else None,
            phone_consent=bool(tracker.get_slot("phone_consent")) and has_phone,
            requested_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        receipt = await asyncio.to_thread(current_sink().submit, request)
        dispatcher.utter_message(
            text=f"{summary(request)}\n\n{next_steps(receipt, has_phone)}",
            json_message={SOURCE_KEY: "bot:handoff", "handoff": receipt.status},
        )
        record = {**request.public(), "status": receipt.status, "reference": receipt.reference}
        cleared = CLEARED_AFTER + (CLEARED_WHEN_STORED if receipt.status == "ticket" else ())
        return [SlotSet(HANDOFF_SLOT, record), *(SlotSet(s, None) for s in cleared)]
