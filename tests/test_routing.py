"""Routing tables: who gets a case, and who gets it next when nobody claims it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.routing import ADMIN, Candidate, CaseFacts, Decision, escalation_due, on_duty_now, route

GROUPS = {"蔬菜": ("大白菜", "番茄")}
KIWI = Candidate(1, "周至县", ("猕猴桃",), True, load=2)
FRUIT = Candidate(2, "周至县", ("果树",), True, load=0)
PIGS = Candidate(3, "周至县", ("畜禽",), True, load=0)
KIWI_OFF = Candidate(4, "周至县", ("猕猴桃",), False, load=0)
KIWI_ELSEWHERE = Candidate(5, "眉县", ("猕猴桃",), True, load=0)
PLANT_DOCTOR = Candidate(6, "眉县", ("植保",), True, load=1)
VEG = Candidate(7, "眉县", ("蔬菜",), True, load=3)


@pytest.mark.parametrize(
    ("facts", "roster", "exclude", "expected"),
    [
        # specialty by crop and by industry, same county: the least loaded wins
        (
            CaseFacts("猕猴桃", "disease", "周至县"),
            [KIWI, FRUIT],
            (),
            Decision(2, "specialty+county"),
        ),
        (CaseFacts("猕猴桃", "disease", "周至县"), [KIWI], (), Decision(1, "specialty+county")),
        # off duty does not count, whatever the specialty
        (
            CaseFacts("猕猴桃", "disease", "周至县"),
            [KIWI_OFF, KIWI],
            (),
            Decision(1, "specialty+county"),
        ),
        # livestock: the crop 生猪 is in the industry 畜禽
        (
            CaseFacts("生猪", "livestock", "周至县"),
            [KIWI, PIGS],
            (),
            Decision(3, "specialty+county"),
        ),
        # livestock named by category only, no animal given
        (CaseFacts(None, "livestock", "周至县"), [KIWI, PIGS], (), Decision(3, "specialty+county")),
        # groups from kb/names.yml: 番茄 is a 蔬菜
        (
            CaseFacts("番茄", "pest", "眉县"),
            [VEG, KIWI_ELSEWHERE],
            (),
            Decision(7, "specialty+county"),
        ),
        # a problem-kind specialty: 植保 covers disease on any crop
        (
            CaseFacts("番茄", "disease", "眉县"),
            [VEG, PLANT_DOCTOR],
            (),
            Decision(6, "specialty+county"),
        ),
        # another county's specialist is not asked; the county pool is
        (
            CaseFacts("猕猴桃", "storage", "周至县"),
            [KIWI_ELSEWHERE, PIGS],
            (),
            Decision(3, "county pool"),
        ),
        # nobody on duty in the county: an admin
        (CaseFacts("猕猴桃", "disease", "周至县"), [KIWI_OFF, KIWI_ELSEWHERE], (), ADMIN),
        (CaseFacts("猕猴桃", "disease", "周至县"), [], (), ADMIN),
        # no county known: any on-duty specialist
        (
            CaseFacts("猕猴桃", "disease", None),
            [PIGS, KIWI_ELSEWHERE],
            (),
            Decision(5, "specialty"),
        ),
        # escalation: those already offered the case are skipped
        (
            CaseFacts("猕猴桃", "disease", "周至县"),
            [KIWI, FRUIT],
            (2,),
            Decision(1, "specialty+county"),
        ),
        (
            CaseFacts("猕猴桃", "disease", "周至县"),
            [KIWI, FRUIT, PIGS],
            (1, 2),
            Decision(3, "county pool"),
        ),
        (CaseFacts("猕猴桃", "disease", "周至县"), [KIWI, FRUIT, PIGS], (1, 2, 3), ADMIN),
        # equal load: the lower id, so that routing is deterministic
        (
            CaseFacts("猕猴桃", "disease", "周至县"),
            [Candidate(9, "周至县", ("猕猴桃",), True), Candidate(8, "周至县", ("猕猴桃",), True)],
            (),
            Decision(8, "specialty+county"),
        ),
    ],
)
def test_route(
    facts: CaseFacts, roster: list[Candidate], exclude: tuple[int, ...], expected: Decision
) -> None:
    assert route(facts, roster, exclude=exclude, groups=GROUPS) == expected


MONDAY = datetime(2026, 11, 23, 9, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("on_duty", "schedule", "now", "expected"),
    [
        (True, None, MONDAY, True),
        (True, [1, 2, 3], MONDAY, True),
        (True, [6, 7], MONDAY, False),
        (False, [1], MONDAY, False),
        (True, [6, 7], MONDAY + timedelta(days=5), True),
    ],
)
def test_weekly_schedule(
    on_duty: bool, schedule: list[int] | None, now: datetime, expected: bool
) -> None:
    assert on_duty_now(on_duty, schedule, now) is expected


@pytest.mark.parametrize(
    ("waited", "expected"),
    [(None, False), (timedelta(minutes=29), False), (timedelta(minutes=30), True)],
)
def test_escalation_due(waited: timedelta | None, expected: bool) -> None:
    offered = None if waited is None else MONDAY - waited
    assert escalation_due(offered, MONDAY, timedelta(minutes=30)) is expected
