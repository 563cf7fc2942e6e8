"""The consultation form's validation: what a commissioner needs before taking a farmer's case.

crop → what is wrong → photo (optional) → where (county/township, or a WeChat location) →
phone (optional, asked with its purpose). Each `validate_<slot>` returns `{slot: value}` to keep
an answer or `{slot: None}` to ask again (Rasa's form contract).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.types import DomainDict

from actions import answers
from bot.knowledge import Names, load_names

FAILURES_SLOT = "form_failures"
# After this many answers the validator could not read, explain why we ask and how to stop.
EXPLAIN_AFTER = 2

WRONG = {
    "crop": "没听明白是什么作物。请直接说名字，比如「猕猴桃」「水稻」「猪」。",
    "problem": "请再多说几个字：哪个部位（叶子、果子、根、茎）、什么样子、有多久了。",
    "photo": "有照片请直接发过来；没有就回复「没有」。",
    "location": "没看懂是哪里。请说县和乡镇，比如「眉县横渠镇」，或用微信发个位置。",
    "phone": "没认出号码。请发11位手机号，比如 138 1234 5678；不想留就回复「不留」。",
}
EXPLAIN = {
    "crop": "问作物是因为不同作物的病虫害和用药完全不同，专家要先知道这个。"
    "说个大概也行，比如「果树」「蔬菜」「中药材」。不想问了回复「算了」。",
    "problem": "专家要先知道出了什么事才能找对人、带对东西。"
    "照实说就行，比如「叶子发黄掉叶」「猪不吃食」。不想问了回复「算了」。",
    "photo": "照片能让专家一眼看出病虫害，但不是必须的。"
    "回复「没有」就跳过；照片发不出来也没关系。不想问了回复「算了」。",
    "location": "问地点只是为了找到您那儿负责的科技特派员，只记到县、乡镇，不要门牌号。"
    "不想说可以回复「不想说」。不想问了回复「算了」。",
    "phone": "电话只给负责您这件事的特派员，用来在需要时打给您，加密保存，不会给别人。"
    "不留也可以，专家会在公众号里回复您：回复「不留」。不想问了回复「算了」。",
}


@functools.lru_cache(maxsize=1)
def names() -> Names:
    """Crop and pest names from kb/names.yml, loaded once on first use."""
    return load_names()


class PatientFormValidation(FormValidationAction):
    """A form validator that counts the answers it could not read, per slot, and after
    repeated failures explains why it asks and how to stop, instead of repeating itself."""

    @abstractmethod
    def name(self) -> str:
        """The validator's action name (abstract: the action server skips this base class)."""

    def accept(self, slot: str, value: Any, tracker: Tracker) -> dict[str, Any]:
        """Keep `value` and forget earlier failures on `slot`."""
        failures = dict(tracker.get_slot(FAILURES_SLOT) or {})
        failures.pop(slot, None)
        return {slot: value, FAILURES_SLOT: failures}

    def reject(
        self, slot: str, dispatcher: CollectingDispatcher, tracker: Tracker
    ) -> dict[str, Any]:
        """Ask again for `slot`; the second time and after, explain the question."""
        if tracker.get_slot("requested_slot") != slot:
            # A value picked up early from another answer: drop it quietly, ask in turn.
            return {slot: None}
        failures = dict(tracker.get_slot(FAILURES_SLOT) or {})
        failures[slot] = int(failures.get(slot, 0)) + 1
        if failures[slot] >= EXPLAIN_AFTER:
            dispatcher.utter_message(text=EXPLAIN[slot])
        else:
            dispatcher.utter_message(text=WRONG[slot])
        return {slot: None, FAILURES_SLOT: failures}


class ValidateConsultationForm(PatientFormValidation):
    """Reads the answers to the consultation form's questions."""

    def name(self) -> str:
        return "validate_consultation_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        """The domain's order: crop, problem, photo, location, phone."""
        return domain_slots

    def validate_crop(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """A known crop by its canonical name, or a short free answer (「烟叶」)."""
        text = str(value or "")
        known = names().canonical_crop(text) or names().find_crop(text)
        crop = answers.read_crop(text, known)
        return (
            self.accept("crop", crop, tracker) if crop else self.reject("crop", dispatcher, tracker)
        )

    def validate_problem(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """The farmer's own words about what is wrong."""
        problem = answers.read_problem(str(value or ""))
        if problem:
            return self.accept("problem", problem, tracker)
        return self.reject("problem", dispatcher, tracker)

    def validate_photo(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """A photo (passed by the gateway as entity `photo`), 'sent', 'later' or none."""
        media = next(tracker.get_latest_entity_values("photo"), None)
        photo = answers.read_photo(_latest_text(tracker, value), media)
        return (
            self.accept("photo", photo, tracker)
            if photo
            else self.reject("photo", dispatcher, tracker)
        )

    def validate_location(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """County/township in words, or a WeChat location (entity `location`)."""
        shared = next(tracker.get_latest_entity_values("location"), None)
        place = answers.read_location(str(shared)) if shared else None
        place = place or answers.read_location(_latest_text(tracker, value))
        if place:
            return self.accept("location", place, tracker)
        return self.reject("location", dispatcher, tracker)

    def validate_phone(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """A phone number given after being told its purpose (consent), or declined."""
        phone = answers.read_phone(_latest_text(tracker, value))
        if phone is None:
            return self.reject("phone", dispatcher, tracker)
        result = self.accept("phone", phone, tracker)
        result["phone_consent"] = phone != answers.NONE_GIVEN
        return result


def _latest_text(tracker: Tracker, value: Any) -> str:
    # An entity-filled value (a media id) is not the farmer's words: read what they typed.
    return str((tracker.latest_message or {}).get("text") or value or "")


ASK = {
    "crop": "是什么作物（或什么畜禽、鱼）？比如「猕猴桃」「水稻」「猪」。",
    "problem": "出了什么问题？说说哪个部位、什么样子、有多久了。",
    "photo": "有照片的话现在发一张（病叶、病果、虫子都行）；没有就回复「没有」。",
    "location": "您在哪个县、哪个乡镇？只记到乡镇，用来找您那儿的特派员；也可以用微信发位置。",
    "phone": "方便留个电话吗？号码加密保存，只给负责您这件事的特派员，用来打给您。"
    "不想留就回复「不留」。",
}


class _AskSlot(Action, ABC):
    """Asks the consultation form's question for one slot."""

    @property
    @abstractmethod
    def slot(self) -> str:
        """The slot asked for (abstract: the action server skips this base class)."""

    def name(self) -> str:
        return f"action_ask_{self.slot}"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=ASK[self.slot])
        return []


class ActionAskCrop(_AskSlot):
    """「是什么作物？」"""

    slot = "crop"


class ActionAskProblem(_AskSlot):
    """「出了什么问题？」"""

    slot = "problem"


class ActionAskPhoto(_AskSlot):
    """「有照片吗？」"""

    slot = "photo"


class ActionAskLocation(_AskSlot):
    """「在哪个县、乡镇？」"""

    slot = "location"


class ActionAskPhone(_AskSlot):
    """「方便留个电话吗？」 with who sees it and why (consent)."""

    slot = "phone"
