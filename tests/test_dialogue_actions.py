"""The dialogue's own actions: reading farmers' answers, the consultation form's validation,
the handoff request, and completing a question once the crop is named."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions import answers, handoff
from actions.answers import NONE_GIVEN, PHOTO_LATER, PHOTO_SENT
from actions.consult import completes, merged_message, pending_question
from actions.forms import EXPLAIN, WRONG, ValidateConsultationForm
from actions.handoff import ActionHandoff, HandoffRequest, Receipt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("13812345678", "13812345678"),
        ("138 1234 5678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("+86 13812345678", "13812345678"),
        ("１３８１２３４５６７８", "13812345678"),  # full-width digits from a phone keyboard
        ("我电话是15909123456", "15909123456"),
        ("一三八一二三四五六七八", "13812345678"),
        ("幺三八一二三四五六七八", "13812345678"),
        ("0916-1234567", "09161234567"),
        ("不留", NONE_GIVEN),
        ("不想留", NONE_GIVEN),
        ("2", NONE_GIVEN),
        ("就在微信上说吧", NONE_GIVEN),
        ("1381234567", None),  # ten digits
        ("12345678901", None),  # not a mobile prefix
        ("我不知道", None),
    ],
)
def test_read_phone(text: str, expected: str | None) -> None:
    assert answers.read_phone(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("周至县", "周至县"),
        ("我在眉县横渠镇", "眉县横渠镇"),
        ("我们这是汉阴县", "汉阴县"),
        ("汉中城固的", "汉中城固"),
        ("在宁陕", "宁陕"),
        ("石柱", "石柱"),
        ("巫溪县红池坝", "巫溪县红池坝"),
        ("住在紫阳县蒿坪镇", "紫阳县蒿坪镇"),
        ("位置：陕西省周至县楼观镇（约 34.1, 108.3）", "陕西省周至县楼观镇(约34.1,108.3)"),
        ("不想说", answers.LOCATION_DECLINED),
        ("叶子黄了", None),
        ("不知道", None),
        ("什么意思", None),
        ("12号", None),
        ("我也说不清楚在哪个地方反正很远", None),
    ],
)
def test_read_location(text: str, expected: str | None) -> None:
    assert answers.read_location(text) == expected


@pytest.mark.parametrize(
    ("text", "media", "expected"),
    [
        ("", "MEDIA123", "MEDIA123"),
        ("没有", None, NONE_GIVEN),
        ("没拍", None, NONE_GIVEN),
        ("没有照片", None, NONE_GIVEN),
        ("不发了", None, NONE_GIVEN),
        ("照片发了", None, PHOTO_SENT),
        ("刚发过了你看看", None, PHOTO_SENT),
        ("等会去地里拍", None, PHOTO_LATER),
        ("好", None, None),
    ],
)
def test_read_photo(text: str, media: str | None, expected: str | None) -> None:
    assert answers.read_photo(text, media) == expected


def test_read_problem_crop_and_mask() -> None:
    assert answers.read_problem("转人工 叶子发黄掉叶") == "叶子发黄掉叶"
    assert answers.read_problem("转人工") is None
    assert answers.read_problem("黄") is None
    assert answers.read_crop("种的是烟叶", None) == "烟叶"
    assert answers.read_crop("随便", "猕猴桃") == "猕猴桃"
    assert answers.read_crop("不知道", None) is None
    assert answers.read_crop("没有", None) is None
    assert answers.mask_phone("13812345678") == "138****5678"
    assert answers.mask_phone(NONE_GIVEN) == "不留"


def form_tracker(
    text: str,
    requested: str,
    slots: dict[str, Any] | None = None,
    intent: str = "inform",
    entities: list[dict[str, Any]] | None = None,
) -> Tracker:
    return Tracker.from_dict(
        {
            "sender_id": "farmer",
            "slots": {"requested_slot": requested, **(slots or {})},
            "latest_message": {
                "text": text,
                "intent": {"name": intent, "confidence": 0.9},
                "entities": entities or [],
            },
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {"name": "consultation_form"},
            "latest_action_name": "action_listen",
        }
    )


def validate(slot: str, value: Any, tracker: Tracker) -> tuple[dict[str, Any], list[str]]:
    dispatcher = CollectingDispatcher()
    result = getattr(ValidateConsultationForm(), f"validate_{slot}")(value, dispatcher, tracker, {})
    return result, [m["text"] for m in dispatcher.messages]


def test_crop_alias_is_kept_by_its_canonical_name() -> None:
    result, said = validate("crop", "奇异果", form_tracker("奇异果", "crop"))
    assert result["crop"] == "猕猴桃"
    assert said == []


def test_unreadable_answer_asks_again_then_explains() -> None:
    first, said1 = validate("location", "不知道", form_tracker("不知道", "location"))
    assert first["location"] is None
    assert said1 == [WRONG["location"]]
    second, said2 = validate(
        "location",
        "不晓得咋说",
        form_tracker("不晓得咋说", "location", {"form_failures": first["form_failures"]}),
    )
    assert second["location"] is None
    assert said2 == [EXPLAIN["location"]]
    assert "算了" in said2[0]  # the way out is always said
    third, _ = validate(
        "location",
        "眉县",
        form_tracker("眉县", "location", {"form_failures": second["form_failures"]}),
    )
    assert third == {"location": "眉县", "form_failures": {}}


def test_a_value_picked_up_early_and_unreadable_is_dropped_silently() -> None:
    # 「转人工」 fills `problem` from its own text; nothing is said until problem is asked.
    result, said = validate("problem", "转人工", form_tracker("转人工", "crop"))
    assert result == {"problem": None}
    assert said == []


def test_photo_from_the_gateway_and_phone_consent() -> None:
    t = form_tracker("", "photo", entities=[{"entity": "photo", "value": "MEDIA9"}])
    result, _ = validate("photo", "MEDIA9", t)
    assert result["photo"] == "MEDIA9"
    given, _ = validate("phone", "13812345678", form_tracker("13812345678", "phone"))
    assert given["phone"] == "13812345678"
    assert given["phone_consent"] is True
    declined, _ = validate("phone", "不留", form_tracker("不留", "phone", intent="deny"))
    assert declined["phone"] == NONE_GIVEN
    assert declined["phone_consent"] is False


def done_tracker(phone: str | None) -> Tracker:
    return form_tracker(
        "",
        "",
        {
            "crop": "猕猴桃",
            "problem": "果子一个个往下掉",
            "photo": NONE_GIVEN,
            "location": "眉县横渠镇",
            "phone": phone,
            "phone_consent": phone not in (None, NONE_GIVEN),
        },
    )


async def test_handoff_is_recorded_with_the_phone_masked_and_says_what_happens() -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, done_tracker("13812345678"), {})
    record = next(e["value"] for e in events if e["name"] == "handoff")
    assert record["crop"] == "猕猴桃"
    assert record["location"] == "眉县横渠镇"
    assert record["phone"] == "138****5678"
    assert record["phone_consent"] is True
    assert record["status"] == "recorded"
    text = dispatcher.messages[0]["text"]
    assert "138****5678" in text and "13812345678" not in text
    assert "不是马上" in text  # no promise the record-only back end cannot keep
    cleared = {e["name"] for e in events if e["value"] is None}
    assert {"problem", "photo"} <= cleared
    assert "phone" not in cleared  # nowhere else holds it until a back end stores it


async def test_a_ticket_back_end_plugs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[HandoffRequest] = []

    class Tickets:
        def submit(self, request: HandoffRequest) -> Receipt:
            seen.append(request)
            return Receipt(status="ticket", reference="KTP-0042", expected="一般当天")

    monkeypatch.setattr(handoff, "_sink", handoff.RecordOnlySink())
    handoff.set_sink(Tickets())
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, done_tracker(NONE_GIVEN), {})
    assert seen[0].phone is None and seen[0].phone_consent is False
    assert "KTP-0042" in dispatcher.messages[0]["text"]
    cleared = {e["name"] for e in events if e["value"] is None}
    assert "phone" in cleared


def user(text: str, intent: str, entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "parse_data": {"text": text, "intent": {"name": intent}, "entities": entities or []},
    }


def test_pending_question_is_the_recent_consultation() -> None:
    crop = [{"entity": "crop", "value": "核桃"}]
    events = [
        user("你好", "greet"),
        user("叶子发黄了咋整", "ask_disease"),
        user("核桃", "inform", crop),
    ]
    t = Tracker("f", {}, events[-1]["parse_data"], events, False, None, {}, "action_listen")
    pending = pending_question(t)
    assert pending is not None and pending["text"] == "叶子发黄了咋整"
    assert completes(pending, events[-1]["parse_data"])
    merged = merged_message(pending, events[-1]["parse_data"])
    assert merged["intent"]["name"] == "ask_disease"
    assert merged["entities"] == crop
    # Too long ago, or the question already had its crop: nothing pending to complete.
    old = [user("叶子发黄了咋整", "ask_disease"), *[user("嗯", "affirm")] * 3, events[-1]]
    assert pending_question(Tracker("f", {}, {}, old, False, None, {}, "")) is None
    with_crop = user("核桃叶子发黄", "ask_disease", crop)["parse_data"]
    assert not completes(with_crop, events[-1]["parse_data"])


def test_the_action_server_registers_every_dialogue_action() -> None:
    from rasa_sdk.executor import ActionExecutor

    executor = ActionExecutor()
    executor.register_package("actions")  # raises if a base class gets instantiated
    expected = {
        "action_answer_pending",
        "action_handoff",
        "validate_consultation_form",
        *(f"action_ask_{s}" for s in ("crop", "problem", "photo", "location", "phone")),
    }
    assert expected <= set(executor.actions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("果树", "果树"),
        ("种的是烟叶", "烟叶"),
        ("养的是鸭子", "鸭子"),
        ("不想说", None),
        ("不知道", None),
        ("果子上有黑点", None),
        ("叶子发黄", None),
        ("是啥病", None),
    ],
)
def test_read_crop_free_answers(text: str, expected: str | None) -> None:
    assert answers.read_crop(text, None) == expected
