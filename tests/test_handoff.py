"""Case transitions on SQLite and PostgreSQL: the happy path, refusals, escalation, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import handoff, pii, roster
from bot.handoff import Actor, HandoffError
from bot.handoff_models import Case, CaseEvent, Commissioner
from tests.handoff_helpers import RecordingSender, data_key, seed_roster, sender, session

__all__ = ["data_key", "sender", "session"]  # fixtures


def person(session: Session, openid: str) -> Actor:
    found = roster.commissioner_by_openid(openid, session=session)
    assert found is not None
    return Actor.of_commissioner(found)


def kiwi_case(session: Session, sender: RecordingSender, **kw: object) -> Case:
    values: dict = {
        "crop": "猕猴桃",
        "category": "disease",
        "symptoms": "叶子上有褐色斑点，越来越多",
        "county": "周至县",
        "township": "楼观镇",
        "phone": "138 1234 5678",
        "media": [{"kind": "image", "media_id": "m1"}],
        "transcript": [{"dir": "in", "who": "farmer", "text": "猕猴桃叶子有斑", "at": "x"}],
        "sender": sender,
    }
    values.update(kw)
    case = handoff.open_case("farmer-1", session=session, **values)
    session.commit()
    return case


def actions(session: Session, case_id: int) -> list[str]:
    return list(
        session.execute(
            select(CaseEvent.action).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        ).scalars()
    )


def test_a_case_goes_from_handoff_to_rating(session: Session, sender: RecordingSender) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    # 王猕 and 李果 both match; equal load, so the lower id (王猕, added first).
    assert case.status == "waiting" and case.offered_to.openid == "c-kiwi"
    assert "【新求助 #" in sender.to("c-kiwi")[0] and f"接 {case.id}" in sender.to("c-kiwi")[0]
    # The phone number is encrypted at rest, and only decrypts with the key.
    assert case.phone_enc and "5678" not in case.phone_enc
    assert pii.decrypt_phone(case.phone_enc) == "13812345678"

    kiwi = person(session, "c-kiwi")
    handoff.claim(case.id, kiwi, session=session)
    out = handoff.reply(case.id, kiwi, "先剪除病叶，喷代森锰锌。", session=session, sender=sender)
    assert out.delivered and case.status == "answered"
    assert sender.to("farmer-1") == [f"【专家回复 #{case.id}】先剪除病叶，喷代森锰锌。"]
    handoff.schedule_visit(case.id, kiwi, "明天上午", session=session)
    handoff.mark_visited(case.id, kiwi, session=session)
    handoff.close(case.id, kiwi, "褐斑病，已指导用药", session=session, sender=sender)
    assert "打分" in sender.to("farmer-1")[-1]
    handoff.rate(case.id, handoff.farmer("farmer-1"), 5, session=session)
    session.commit()

    assert (case.status, case.rating, case.resolution) == ("closed", 5, "褐斑病，已指导用药")
    assert actions(session, case.id) == [
        "opened",
        "offered",
        "claim",
        "reply",
        "schedule_visit",
        "mark_visited",
        "close",
        "rate",
    ]
    claim_ev = session.execute(
        select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "claim")
    ).scalar_one()
    assert claim_ev.actor.startswith("commissioner:") and claim_ev.at is not None
    assert (claim_ev.from_status, claim_ev.to_status) == ("waiting", "assigned")


@pytest.mark.parametrize(
    ("steps", "refused", "message"),
    [
        ([], lambda s, c, a: handoff.close(c, a, "x", session=s), "不是您负责"),
        (["claim"], lambda s, c, a: handoff.claim(c, a, session=s), "不能接单"),
        (["claim"], lambda s, c, a: handoff.mark_visited(c, a, session=s), "不能记为已上门"),
        (["claim", "close"], lambda s, c, a: handoff.close(c, a, "y", session=s), "不能结案"),
        (["claim"], lambda s, c, a: handoff.rate(c, a, 4, session=s), "不能评分"),
        (["claim", "close"], lambda s, c, a: handoff.rate(c, a, 9, session=s), "1～5"),
        (["claim"], lambda s, c, a: handoff.close(c, a, "  ", session=s), "处理结果"),
    ],
)
def test_illegal_transitions_are_refused_clearly(
    session: Session, sender: RecordingSender, steps: list[str], refused: object, message: str
) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    kiwi = person(session, "c-kiwi")
    for step in steps:
        if step == "claim":
            handoff.claim(case.id, kiwi, session=session)
        else:
            handoff.close(case.id, kiwi, "已解决", session=session)
    before = case.status
    with pytest.raises(HandoffError, match=message):
        refused(session, case.id, kiwi)  # type: ignore[operator]
    assert case.status == before


def test_only_the_assigned_commissioner_answers(session: Session, sender: RecordingSender) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    handoff.claim(case.id, person(session, "c-kiwi"), session=session)
    with pytest.raises(HandoffError, match="不是您负责"):
        handoff.reply(case.id, person(session, "c-fruit"), "我来答", session=session, sender=sender)
    # Another county cannot even claim a waiting case.
    other = kiwi_case(session, sender, county="周至县")
    assert other.id == case.id  # the farmer's open case is reused, not duplicated
    with pytest.raises(HandoffError, match="不在您的县"):
        new = handoff.open_case("farmer-2", session=session, crop="猕猴桃", county="周至县")
        handoff.claim(new.id, person(session, "c-mei"), session=session)


def test_a_reply_the_window_refuses_is_held(session: Session, sender: RecordingSender) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    kiwi = person(session, "c-kiwi")
    handoff.claim(case.id, kiwi, session=session)
    out = handoff.reply(
        case.id, kiwi, "晚到的回答", session=session, sender=RecordingSender(refuse="window_closed")
    )
    assert not out.delivered and out.delivery == "window_closed"
    assert case.transcript[-1]["delivery"] == "window_closed"
    assert "reply_held" in actions(session, case.id)


def test_unclaimed_cases_escalate_to_the_next_person_then_an_admin(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    start = case.created_at
    assert handoff.escalate_due(start + timedelta(minutes=10), session=session) == []
    seen = [case.offered_to.openid]
    for minutes in (31, 62, 93):
        moved = handoff.escalate_due(
            start + timedelta(minutes=minutes), session=session, sender=sender
        )
        assert moved == [case.id]
        seen.append(case.offered_to.openid if case.offered_to else "admin")
    session.commit()
    # Specialists of the county, then the county pool (the pig vet), then an admin; 眉县's
    # kiwifruit person and the off-duty one are never asked, and nobody twice.
    assert seen == ["c-kiwi", "c-fruit", "c-pig", "admin"]
    assert case.needs_admin and case.escalation_level == 3
    assert handoff.escalate_due(start + timedelta(hours=9), session=session) == []
    assert actions(session, case.id).count("escalated") == 3


def test_nobody_on_duty_goes_straight_to_an_admin(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    for c in session.execute(select(Commissioner)).scalars():
        c.on_duty = False
    session.commit()
    case = kiwi_case(session, sender)
    assert case.needs_admin and case.offered_to_id is None and sender.sent == []


def test_reopen_goes_back_to_the_same_commissioner(
    session: Session, sender: RecordingSender
) -> None:
    seed_roster(session)
    case = kiwi_case(session, sender)
    kiwi = person(session, "c-kiwi")
    handoff.claim(case.id, kiwi, session=session)
    handoff.close(case.id, kiwi, "已解决", session=session)
    handoff.reopen(case.id, handoff.farmer("farmer-1"), "还是有斑", session=session, sender=sender)
    assert (case.status, case.commissioner.openid) == ("assigned", "c-kiwi")
    assert "重新打开" in sender.to("c-kiwi")[-1]
    with pytest.raises(HandoffError):
        handoff.reopen(case.id, kiwi, session=session)


def test_the_data_key_is_required_outside_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pii.DataKeyError, match="KTP_DATA_KEY"):
        pii.data_key({})
    assert pii.data_key({"KTP_SIMULATOR": "1"}) == pii.DEV_DATA_KEY
    with pytest.raises(pii.DataKeyError, match="32"):
        pii.data_key({"KTP_DATA_KEY": "short"})
    assert pii.mask_phone("13812345678") == "138****5678"
