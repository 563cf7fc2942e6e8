"""A photo or a WeChat location sent while the consultation form asks for it fills the form's slot
through Rasa (`/inform{"photo": ...}`), is still downloaded, and the location stays coarse; any
other time the fixed reply answers and Rasa is not asked."""

from __future__ import annotations

import json
from pathlib import Path

from bot.conversation import place_of
from bot.models import MediaFile, Message
from bot.replies import NON_TEXT_REPLIES
from bot.settings import Settings
from tests.conftest import FakeRasa
from tests.test_gateway_types import rows, send, start, until

NEXT_QUESTION = "您在哪个县、哪个乡镇？只记到乡镇，用来找您那儿的特派员；也可以用微信发位置。"


def _inform(message: str) -> dict[str, str]:
    assert message.startswith("/inform{"), message
    data: dict[str, str] = json.loads(message.removeprefix("/inform"))
    return data


async def test_a_photo_at_the_forms_photo_question_fills_the_slot_through_rasa(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    fake_rasa.active_loop, fake_rasa.requested_slot = "consultation_form", "photo"
    fake_rasa.replies = [{"text": NEXT_QUESTION}]
    fake_rasa.intent, fake_rasa.entities = "inform", [{"entity": "photo", "value": "x"}]
    client = await start(settings, tmp_path)
    try:
        result = await send(client, type="image", image_base64="aGVsbG8gcGhvdG8=")
        await until(lambda: [m.status for m in rows(settings, MediaFile)] == ["stored"])
    finally:
        await client.close()
    assert result["reply"] == NEXT_QUESTION  # the form moved on
    (media,) = rows(settings, MediaFile)
    (asked,) = fake_rasa.received
    assert _inform(asked["message"]) == {"photo": media.media_id}
    inbound = [m for m in rows(settings) if m.direction == "in"]
    assert [(m.msg_type, m.intent) for m in inbound] == [("image", "inform")]
    assert (tmp_path / "media" / media.path).read_bytes() == b"hello photo"


async def test_a_location_at_the_forms_place_question_goes_coarse_to_rasa(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    fake_rasa.active_loop, fake_rasa.requested_slot = "consultation_form", "location"
    fake_rasa.replies = [{"text": "方便留个电话吗？"}]
    client = await start(settings, tmp_path)
    try:
        result = await send(
            client, type="location", lat="34.160271", lon="108.216911",
            label="陕西省西安市周至县楼观镇周一村3组",
        )  # fmt: skip
    finally:
        await client.close()
    assert result["reply"] == "方便留个电话吗？"
    (asked,) = fake_rasa.received
    assert _inform(asked["message"]) == {"location": "位置：陕西省西安市周至县楼观镇"}
    assert "周一村" not in asked["message"] and "34.16" not in asked["message"]
    (inbound,) = [m for m in rows(settings, Message) if m.direction == "in"]
    assert "周一村" not in (inbound.text or "")


async def test_outside_the_form_or_at_another_question_the_fixed_reply_answers(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    client = await start(settings, tmp_path)
    try:
        plain = await send(client, type="image", image_base64="aGVsbG8=")
        fake_rasa.active_loop, fake_rasa.requested_slot = "consultation_form", "crop"
        at_crop = await send(client, type="image", image_base64="aGVsbG8=")
        at_crop_place = await send(client, type="location", label="陕西省周至县楼观镇")
        fake_rasa.requested_slot = "location"
        no_name = await send(client, type="location", label="")
    finally:
        await client.close()
    assert plain["reply"] == at_crop["reply"] == NON_TEXT_REPLIES["image"]
    assert at_crop_place["reply"] == no_name["reply"] == NON_TEXT_REPLIES["location"]
    assert fake_rasa.received == []


async def test_rasa_down_still_gets_the_fixed_reply(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    fake_rasa.token = "not-the-gateways"  # the tracker read is refused (401)
    fake_rasa.active_loop, fake_rasa.requested_slot = "consultation_form", "photo"
    client = await start(settings, tmp_path)
    try:
        result = await send(client, type="image", image_base64="aGVsbG8=")
    finally:
        await client.close()
    assert result["reply"] == NON_TEXT_REPLIES["image"] and fake_rasa.received == []


def test_place_of_drops_the_coordinates() -> None:
    assert place_of("位置：陕西省周至县楼观镇（约 34.2, 108.2）") == "陕西省周至县楼观镇"
    assert place_of("位置：（未知地名）（约 34.2, 108.2）") is None
    assert place_of(None) is None and place_of("链接：x") is None


async def test_during_a_case_a_location_goes_to_the_commissioner_with_held_replies(
    settings: Settings, tmp_path: Path, fake_rasa: FakeRasa
) -> None:
    from bot import handoff, roster
    from bot.handoff_push import outbox_sender
    from bot.models import OutboxItem
    from tests.test_gateway_handoff import in_db

    client = await start(settings, tmp_path)
    try:
        in_db(
            settings,
            lambda s: roster.add_commissioner(
                session=s, name="王猕", openid="c-kiwi", county="周至县",
                specialties=["猕猴桃"], on_duty=True,
            ),
        )  # fmt: skip
        await send(client, type="text", text="我的", openid="c-kiwi")
        await send(client, type="text", text="猕猴桃叶子黄了")
        cid = in_db(
            settings,
            lambda s: handoff.open_case("f1", session=s, crop="猕猴桃", sender=outbox_sender).id,
        )
        result = await send(client, type="location", label="陕西省西安市周至县楼观镇周一村3组")
        pushes = in_db(
            settings,
            lambda s: list(
                s.execute(OutboxItem.__table__.select().where(OutboxItem.openid == "c-kiwi"))
            ),
        )
    finally:
        await client.close()
    assert f"求助单 #{cid}" in result["reply"]
    (push,) = [p for p in pushes if "农户：位置" in p.content]
    assert "楼观镇" in push.content and "周一村" not in push.content
    assert len(fake_rasa.received) == 1  # the location did not go to Rasa
