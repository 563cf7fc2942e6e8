"""The action server's handoff back end: the consultation form's request opens a case in the
database (SQLite and PostgreSQL), with the phone encrypted and the commissioner's push queued."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.orm import Session

from actions import answers, handoff
from actions.handoff import ActionHandoff, HandoffRequest
from actions.handoff_sink import DbHandoffSink, split_location
from bot import pii, records
from bot.handoff_models import Case
from bot.models import OutboxItem
from bot.records import InboundRecord, ReplyRecord
from tests.handoff_helpers import DATA_KEY, data_key, seed_roster, session

__all__ = ["data_key", "session"]  # fixtures


@pytest.fixture(autouse=True)
def fresh_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii, "_configured", [])  # the sink installs the key it reads


def wrote(session: Session, openid: str, text: str, key: str) -> None:
    rec = InboundRecord(openid=openid, dedupe_key=key, msg_type="text", text=text,
                        received_at=records.utcnow())  # fmt: skip
    records.record_exchange(session, rec, [ReplyRecord("好的", "bot")])


def request(**kw: Any) -> HandoffRequest:
    fields: dict[str, Any] = {
        "sender_id": "farmer-9",
        "crop": "猕猴桃",
        "problem": "果子上有白霉",
        "photo": "media-123",
        "location": "周至县楼观镇",
        "phone": "13812345678",
        "phone_consent": True,
        "requested_at": "2026-11-22T08:00:00+00:00",
    }
    return HandoffRequest(**{**fields, **kw})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("周至县楼观镇", ("周至县", "楼观镇")),
        ("周至", ("周至县", None)),
        ("我们是周至县的", ("周至县", None)),
        ("眉县横渠镇", ("眉县", "横渠镇")),
        ("陕西省汉中市城固县", ("城固县", None)),
        (answers.LOCATION_DECLINED, (None, None)),
        (None, (None, None)),
    ],
)
def test_location_is_split_into_county_and_township(text: str | None, expected: tuple) -> None:
    assert split_location(text, ["周至县", "眉县"]) == expected


def test_a_request_opens_a_case_for_the_county_kiwifruit_commissioner(
    session: Session, any_db_url: str
) -> None:
    seed_roster(session)
    wrote(session, "farmer-9", "转人工", "k1")
    wrote(session, "c-kiwi", "我的", "k2")  # their 48 h window is open
    session.commit()

    receipt = DbHandoffSink(any_db_url).submit(request())
    assert receipt.status == "ticket" and receipt.reference is not None
    case = session.execute(select(Case)).scalar_one()
    assert receipt.reference == f"#{case.id}"
    assert (case.crop, case.county, case.township) == ("猕猴桃", "周至县", "楼观镇")
    assert case.media == [{"kind": "image", "media_id": "media-123"}]
    assert case.status == "waiting" and case.offered_to.openid == "c-kiwi"
    assert "13812345678" not in case.phone_enc
    assert pii.decrypt_phone(case.phone_enc, DATA_KEY) == "13812345678"
    assert [e["text"] for e in case.transcript if e["dir"] == "in"] == ["转人工"]
    push = session.execute(select(OutboxItem).where(OutboxItem.openid == "c-kiwi")).scalar_one()
    assert f"【新求助 #{case.id}】" in push.content


def test_no_phone_without_consent_and_no_photo_when_declined(
    session: Session, any_db_url: str
) -> None:
    seed_roster(session)
    session.commit()
    sink = DbHandoffSink(any_db_url)
    sink.submit(request(phone="13812345678", phone_consent=False, photo=answers.NONE_GIVEN))
    case = session.execute(select(Case)).scalar_one()
    assert case.phone_enc is None and case.media == []


def test_an_unreachable_database_leaves_the_request_in_the_service_record(tmp_path: Any) -> None:
    sink = DbHandoffSink(f"sqlite:///{tmp_path}/missing-dir/nothing/../x.db")
    # No schema there: open_case fails, the farmer is told it is recorded, nothing raises.
    assert sink.submit(request()).status == "recorded"


async def test_the_farmer_is_given_the_case_number(
    session: Session, any_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_roster(session)
    session.commit()
    monkeypatch.setattr(handoff, "_sink", None)  # the default: the database back end
    monkeypatch.setenv("DATABASE_URL", any_db_url)
    slots = {
        "crop": "猕猴桃",
        "problem": "果子上有白霉",
        "photo": answers.NONE_GIVEN,
        "location": "周至",
        "phone": "13812345678",
        "phone_consent": True,
    }
    tracker = Tracker("farmer-9", slots, {}, [], False, None, {}, "")
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, tracker, {})
    case = session.execute(select(Case)).scalar_one()
    assert f"编号 #{case.id}" in dispatcher.messages[0]["text"]
    assert isinstance(handoff.current_sink(), DbHandoffSink)
    cleared = {e["name"] for e in events if e["value"] is None}
    assert {"phone", "phone_consent"} <= cleared  # stored encrypted: the tracker forgets it
