"""Reading a month's service records from the database into the report's plain records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.admin.figures import CaseRec, ConsultationRec
from bot.case_core import aware
from bot.handoff_models import Case, Commissioner
from bot.models import Conversation

# County bureaus count months in China Standard Time (no daylight saving).
CST = timezone(timedelta(hours=8), "CST")


class ReportError(ValueError):
    """A report request that cannot be met (a malformed month)."""


@dataclass(frozen=True)
class MonthData:
    """Everything one month's report is computed from."""

    month: str
    start: datetime
    end: datetime
    consultations: list[ConsultationRec]
    cases: list[CaseRec]
    roster: list[tuple[int, str, str]]  # (id, name, county)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of YYYY-MM in China Standard Time."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise ReportError(f"month must be YYYY-MM, not {month!r}")
    year, mon = int(month[:4]), int(month[5:])
    start = datetime(year, mon, 1, tzinfo=CST)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=CST)
    return start, end


def _case_rec(case: Case) -> CaseRec:
    def opt(value: datetime | None) -> datetime | None:
        return aware(value) if value is not None else None

    return CaseRec(
        id=case.id,
        county=case.county,
        crop=case.crop,
        category=case.category,
        status=case.status,
        commissioner_id=case.commissioner_id,
        commissioner=case.commissioner.name if case.commissioner else None,
        created_at=aware(case.created_at),
        first_reply_at=opt(case.first_reply_at),
        visited_at=opt(case.visited_at),
        closed_at=opt(case.closed_at),
        rating=case.rating,
        escalated=bool(case.escalation_level) or bool(case.needs_admin),
    )


def load_month(month: str, *, session: Session, county: str | None = None) -> MonthData:
    """The month's consultations, cases and roster; `county` limits them to one county."""
    start, end = month_bounds(month)
    # A day's margin either side, then the exact bounds on aware times (SQLite keeps no zone).
    lo, hi = start - timedelta(days=1), end + timedelta(days=1)
    cases = [
        c
        for c in session.execute(
            select(Case).where(Case.created_at >= lo, Case.created_at < hi).order_by(Case.id)
        ).scalars()
        if start <= aware(c.created_at) < end and (county is None or c.county == county)
    ]
    case_of_conv = {
        row.conversation_id: row
        for row in session.execute(
            select(Case.id, Case.conversation_id, Case.county).where(
                Case.conversation_id.is_not(None)
            )
        )
    }
    consults = []
    for conv in session.execute(
        select(Conversation.id, Conversation.started_at, Conversation.category, Conversation.crop)
        .where(Conversation.started_at >= lo, Conversation.started_at < hi)
        .order_by(Conversation.id)
    ):
        linked = case_of_conv.get(conv.id)
        started = aware(conv.started_at)
        if not start <= started < end or (conv.category is None and linked is None):
            continue
        rec = ConsultationRec(
            id=conv.id,
            started_at=started,
            category=conv.category,
            crop=conv.crop,
            case_id=linked.id if linked else None,
            county=linked.county if linked else None,
        )
        if county is None or rec.county == county:
            consults.append(rec)
    query = select(Commissioner).order_by(Commissioner.county, Commissioner.id)
    if county is not None:
        query = query.where(Commissioner.county == county)
    roster = [(c.id, c.name, c.county) for c in session.execute(query).scalars()]
    return MonthData(month, start, end, consults, [_case_rec(c) for c in cases], roster)
