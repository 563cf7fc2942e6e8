"""The roster and console accounts: functions that take the caller's session and never commit."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from bot import passwords, routing
from bot.handoff_models import OPEN_STATUSES, ROLES, Account, Case, Commissioner


class RosterError(ValueError):
    """A roster or account change that cannot be made (duplicate, unknown role...)."""


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(timezone.utc)


def add_commissioner(
    *,
    session: Session,
    name: str,
    openid: str,
    county: str,
    specialties: Iterable[str],
    on_duty: bool = False,
    schedule: Iterable[int] | None = None,
) -> Commissioner:
    """Add a commissioner, or update the one bound to `openid` (re-running never duplicates)."""
    specs = list(dict.fromkeys(s.strip() for s in specialties if s.strip()))
    if not specs:
        raise RosterError("a commissioner needs at least one specialty")
    days = sorted(set(schedule)) if schedule else None
    if days and not all(1 <= d <= 7 for d in days):
        raise RosterError("schedule days are ISO weekdays 1 (Monday) to 7 (Sunday)")
    found = commissioner_by_openid(openid, session=session)
    if found is None:
        found = Commissioner(openid=openid, created_at=utcnow(), active=True)
        session.add(found)
    found.name, found.county, found.specialties = name, county, specs
    found.on_duty, found.schedule = on_duty, days
    session.flush()
    return found


def commissioner_by_openid(openid: str, *, session: Session) -> Commissioner | None:
    """The commissioner bound to a WeChat openid, if any."""
    return session.execute(
        select(Commissioner).where(Commissioner.openid == openid)
    ).scalar_one_or_none()


def commissioners(*, session: Session, county: str | None = None) -> list[Commissioner]:
    """The roster (of one county), by county and name."""
    query = select(Commissioner).order_by(Commissioner.county, Commissioner.name)
    if county:
        query = query.where(Commissioner.county == county)
    return list(session.execute(query).scalars())


def loads(*, session: Session) -> dict[int, int]:
    """Open cases per commissioner: those they hold plus those waiting on them."""
    out: dict[int, int] = {}
    for column in (Case.commissioner_id, Case.offered_to_id):
        status_ok = (
            Case.status.in_(OPEN_STATUSES)
            if column is Case.commissioner_id
            else (Case.status == "waiting")
        )
        rows = session.execute(
            select(column, func.count(Case.id))
            .where(column.isnot(None), status_ok)
            .group_by(column)
        )
        for cid, count in rows:
            out[int(cid)] = out.get(int(cid), 0) + int(count)
    return out


def candidates(*, session: Session, now: datetime) -> list[routing.Candidate]:
    """The active roster as routing sees it: on duty today, with current loads."""
    load = loads(session=session)
    return [
        routing.Candidate(
            id=c.id,
            county=c.county,
            specialties=tuple(c.specialties or ()),
            on_duty=routing.on_duty_now(bool(c.on_duty), c.schedule, now),
            load=load.get(c.id, 0),
        )
        for c in session.execute(select(Commissioner).where(Commissioner.active.is_(True)))
        .scalars()
        .all()
    ]


def add_account(
    *,
    session: Session,
    username: str,
    password: str,
    role: str,
    county: str | None = None,
    commissioner_openid: str | None = None,
    wechat_openid: str | None = None,
) -> Account:
    """Create a console account (an existing username gets the new password and role).

    `wechat_openid`: an admin's own WeChat openid, for pushes about cases nobody can take."""
    if role not in ROLES:
        raise RosterError(f"role must be one of {', '.join(ROLES)}")
    commissioner = None
    if commissioner_openid:
        commissioner = commissioner_by_openid(commissioner_openid, session=session)
        if commissioner is None:
            raise RosterError(f"no commissioner has openid {commissioner_openid!r}")
    if role == "commissioner" and commissioner is None:
        raise RosterError("a commissioner account needs --commissioner-openid")
    if role == "commissioner" and commissioner is not None:
        county = county or commissioner.county
    account = account_by_username(username, session=session)
    if account is None:
        account = Account(username=username, created_at=utcnow(), active=True)
        session.add(account)
    account.password_hash = passwords.hash_password(password)
    account.role, account.county = role, county or None
    account.commissioner_id = commissioner.id if commissioner is not None else None
    if wechat_openid is not None:
        account.wechat_openid = wechat_openid.strip() or None
    session.flush()
    return account


def account_by_username(username: str, *, session: Session) -> Account | None:
    """The account with this username, if any."""
    return session.execute(select(Account).where(Account.username == username)).scalar_one_or_none()


def authenticate(username: str, password: str, *, session: Session) -> Account | None:
    """The active account whose password matches, else None (same work for unknown users)."""
    account = account_by_username(username, session=session)
    stored = account.password_hash if account is not None else _DUMMY_HASH
    ok = passwords.verify_password(password, stored)
    if account is None or not ok or not account.active:
        return None
    account.last_login_at = utcnow()
    return account


# Verifying against this keeps an unknown username as slow as a wrong password.
_DUMMY_HASH = (
    "scrypt$131072$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def admins_for(county: str | None, *, session: Session) -> list[Account]:
    """Admins responsible for a county: the county's own, then province-level ones."""
    return list(
        session.execute(
            select(Account)
            .where(
                Account.role == "admin",
                Account.active.is_(True),
                or_(Account.county == county, Account.county.is_(None)),
            )
            .order_by(Account.county.is_(None), Account.id)
        ).scalars()
    )
