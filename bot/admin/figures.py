"""The assessment figures, as pure functions over plain records (no database, no I/O).

Definitions (also printed on the report's first sheet):
- consultation: a conversation started in the month in which a consultation intent was seen
  (its `category` is set) or which was handed to a person;
- bot-answered: a consultation with no case; handed off: one with a case;
- a case belongs to the month it was opened in, to the commissioner who claimed it, and to the
  county the farmer gave (「未知」 when none);
- time to first reply / to close: from the case being opened, in minutes (median and p90,
  nearest rank); unanswered: no commissioner reply yet; escalated: offered on or sent to an admin.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

UNKNOWN = "未知"


@dataclass(frozen=True)
class ConsultationRec:
    """One consultation (conversation) of the month."""

    id: int
    started_at: datetime
    category: str | None
    crop: str | None
    case_id: int | None  # the case it was handed off to, if any
    county: str | None  # the county of that case (conversations carry none)


@dataclass(frozen=True)
class CaseRec:
    """One case opened in the month, with its milestones."""

    id: int
    county: str | None
    crop: str | None
    category: str | None
    status: str
    commissioner_id: int | None
    commissioner: str | None
    created_at: datetime
    first_reply_at: datetime | None
    visited_at: datetime | None
    closed_at: datetime | None
    rating: int | None
    escalated: bool


@dataclass(frozen=True)
class Row:
    """One line of the report: a commissioner, a county, or the total."""

    key: str
    county: str
    consultations: int | None  # None on commissioner rows: consultations are not theirs
    bot_answered: int | None
    handed_off: int | None
    assigned: int
    answered: int
    closed: int
    visits: int
    first_reply_median: float | None
    first_reply_p90: float | None
    close_median: float | None
    close_p90: float | None
    rating_mean: float | None
    rating_count: int
    unanswered: int
    escalated: int


COLUMNS = [
    ("key", "名称"),
    ("county", "县"),
    ("consultations", "咨询数"),
    ("bot_answered", "机器人解答"),
    ("handed_off", "转人工"),
    ("assigned", "接单数"),
    ("answered", "已回复"),
    ("closed", "已结案"),
    ("visits", "上门次数"),
    ("first_reply_median", "首次回复用时中位数(分)"),
    ("first_reply_p90", "首次回复用时P90(分)"),
    ("close_median", "结案用时中位数(分)"),
    ("close_p90", "结案用时P90(分)"),
    ("rating_mean", "满意度均分"),
    ("rating_count", "评分数"),
    ("unanswered", "未回复"),
    ("escalated", "升级/转管理员"),
]


def minutes(start: datetime, end: datetime | None) -> float | None:
    """Minutes from start to end, or None."""
    return None if end is None else round((end - start).total_seconds() / 60, 1)


def median(values: Iterable[float]) -> float | None:
    """The median, or None for no values."""
    vals = list(values)
    return round(float(statistics.median(vals)), 1) if vals else None


def p90(values: Iterable[float]) -> float | None:
    """The 90th percentile by nearest rank (a value that occurred), or None."""
    vals = sorted(values)
    if not vals:
        return None
    return round(float(vals[max(0, math.ceil(0.9 * len(vals)) - 1)]), 1)


def _case_figures(cases: list[CaseRec]) -> dict[str, Any]:
    first = [m for c in cases if (m := minutes(c.created_at, c.first_reply_at)) is not None]
    close = [m for c in cases if (m := minutes(c.created_at, c.closed_at)) is not None]
    ratings = [c.rating for c in cases if c.rating is not None]
    return {
        "assigned": sum(c.commissioner_id is not None for c in cases),
        "answered": sum(c.first_reply_at is not None for c in cases),
        "closed": sum(c.closed_at is not None for c in cases),
        "visits": sum(c.visited_at is not None for c in cases),
        "first_reply_median": median(first),
        "first_reply_p90": p90(first),
        "close_median": median(close),
        "close_p90": p90(close),
        "rating_mean": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "rating_count": len(ratings),
        "unanswered": sum(c.first_reply_at is None for c in cases),
        "escalated": sum(c.escalated for c in cases),
    }


def _consult_figures(consults: list[ConsultationRec]) -> dict[str, Any]:
    handed = sum(c.case_id is not None for c in consults)
    return {
        "consultations": len(consults),
        "bot_answered": len(consults) - handed,
        "handed_off": handed,
    }


def commissioner_rows(cases: list[CaseRec], roster: list[tuple[int, str, str]]) -> list[Row]:
    """One row per commissioner on the roster (id, name, county), zero rows included."""
    rows = []
    for cid, name, county in roster:
        mine = [c for c in cases if c.commissioner_id == cid]
        figures = _case_figures(mine)
        rows.append(
            Row(
                key=name,
                county=county,
                consultations=None,
                bot_answered=None,
                handed_off=None,
                **figures,
            )
        )
    return rows


def _county(value: str | None) -> str:
    return value or UNKNOWN


def county_rows(consults: list[ConsultationRec], cases: list[CaseRec]) -> list[Row]:
    """One row per county seen in the month, then the total."""
    names = sorted({_county(c.county) for c in consults} | {_county(c.county) for c in cases})
    rows = [
        _row(
            name,
            name,
            [c for c in consults if _county(c.county) == name],
            [c for c in cases if _county(c.county) == name],
        )
        for name in names
    ]
    rows.append(_row("合计", "全部", consults, cases))
    return rows


def _row(key: str, county: str, consults: list[ConsultationRec], cases: list[CaseRec]) -> Row:
    return Row(key=key, county=county, **_consult_figures(consults), **_case_figures(cases))


def counts_by(items: Iterable[Any], key: Callable[[Any], str | None]) -> list[tuple[str, int]]:
    """(label, count) pairs, largest first, None counted as 「未知」."""
    tally: dict[str, int] = {}
    for item in items:
        label = key(item) or UNKNOWN
        tally[label] = tally.get(label, 0) + 1
    return sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))


def per_day(consults: Iterable[ConsultationRec], tz: Any) -> list[tuple[str, int]]:
    """(YYYY-MM-DD, count) in date order, days in the report's time zone."""
    tally: dict[str, int] = {}
    for c in consults:
        day = c.started_at.astimezone(tz).strftime("%Y-%m-%d")
        tally[day] = tally.get(day, 0) + 1
    return sorted(tally.items())
