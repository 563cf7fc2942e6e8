"""`ketepai commissioner ...`, `ketepai user add` and `ketepai cases escalate`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from bot.kb_cli import database_url

T = TypeVar("T")


def _say(message: str, err: bool = False) -> None:
    """A line for the operator (a command-line tool, not server code)."""
    (sys.stderr if err else sys.stdout).write(message + "\n")


def _in_transaction(work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction on DATABASE_URL (schema brought up to date first)."""
    from bot import db

    url = database_url()
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with db.make_sessionmaker(engine)() as session, session.begin():
            return work(session)
    finally:
        engine.dispose()


def cmd_commissioner_add(args: argparse.Namespace) -> int:
    """Add a commissioner to the roster (or update the one with this openid)."""
    from bot import roster

    def work(session: Session) -> str:
        c = roster.add_commissioner(
            session=session,
            name=args.name,
            openid=args.openid,
            county=args.county,
            specialties=args.specialty,
            on_duty=args.on_duty,
            schedule=args.day or None,
        )
        return f"commissioner {c.id}: {c.name} ({c.county}) {'、'.join(c.specialties)}"

    try:
        _say(_in_transaction(work))
    except roster.RosterError as exc:
        _say(f"error: {exc}", err=True)
        return 1
    return 0


def cmd_commissioner_list(_args: argparse.Namespace) -> int:
    """List the roster: id, name, county, specialties, on duty, openid."""
    from bot import roster

    def work(session: Session) -> list[str]:
        return [
            f"{c.id}\t{c.name}\t{c.county}\t{'、'.join(c.specialties)}\t"
            f"{'on duty' if c.on_duty else 'off'}"
            f"{' days ' + ','.join(map(str, c.schedule)) if c.schedule else ''}\t{c.openid}"
            + ("" if c.active else "\tinactive")
            for c in roster.commissioners(session=session)
        ]

    lines = _in_transaction(work)
    _say("\n".join(lines) if lines else "no commissioners yet (ketepai commissioner add ...)")
    return 0


def _password() -> str:
    first = os.environ.get("KTP_PASSWORD") or ""
    if not first:
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the two passwords differ")
    if len(first) < 10:
        raise ValueError("use at least 10 characters")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    """Create a console account; the password comes from a prompt or KTP_PASSWORD."""
    from bot import roster

    try:
        password = _password()
        account = _in_transaction(
            lambda session: (
                roster.add_account(
                    session=session,
                    username=args.username,
                    password=password,
                    role=args.role,
                    county=args.county,
                    commissioner_openid=args.commissioner_openid,
                    wechat_openid=args.wechat_openid,
                ).username
            )
        )
    except (ValueError, roster.RosterError) as exc:
        _say(f"error: {exc}", err=True)
        return 1
    where = args.county or ("the province" if args.role == "admin" else "their county")
    _say(f"account {account} ({args.role}, {where}) is ready")
    return 0


def cmd_cases_escalate(args: argparse.Namespace) -> int:
    """Offer every case unclaimed for --after minutes to the next person (finally an admin)."""
    from bot import handoff
    from bot.handoff_push import outbox_sender
    from bot.roster import utcnow

    moved = _in_transaction(
        lambda session: handoff.escalate_due(
            utcnow(), session=session, after=timedelta(minutes=args.after), sender=outbox_sender
        )
    )
    _say(f"escalated {len(moved)} case(s)" + "".join(f" #{i}" for i in moved))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the commissioner, user and cases command groups."""
    com = sub.add_parser("commissioner", help="the roster of commissioners").add_subparsers(
        dest="commissioner", required=True
    )
    add = com.add_parser("add", help=cmd_commissioner_add.__doc__)
    add.add_argument("--name", required=True)
    add.add_argument("--openid", required=True, help="their WeChat openid for this account")
    add.add_argument("--county", required=True)
    add.add_argument(
        "--specialty", action="append", required=True, help="a crop or industry (repeat)"
    )
    add.add_argument("--on-duty", action="store_true", help="takes cases now")
    add.add_argument(
        "--day",
        action="append",
        type=int,
        choices=range(1, 8),
        metavar="1-7",
        help="on duty only on this ISO weekday (repeat; default: every day)",
    )
    add.set_defaults(func=cmd_commissioner_add)
    com.add_parser("list", help=cmd_commissioner_list.__doc__).set_defaults(
        func=cmd_commissioner_list
    )

    user = sub.add_parser("user", help="console accounts").add_subparsers(
        dest="user", required=True
    )
    uadd = user.add_parser("add", help=cmd_user_add.__doc__)
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--role", required=True, choices=("admin", "commissioner"))
    uadd.add_argument("--county", help="an admin's county (none: province-level)")
    uadd.add_argument("--commissioner-openid", help="the commissioner this account is")
    uadd.add_argument(
        "--wechat-openid",
        help="an admin's own WeChat openid: pushed about cases nobody on duty can take",
    )
    uadd.set_defaults(func=cmd_user_add)

    cases = sub.add_parser("cases", help="handoff cases").add_subparsers(
        dest="cases", required=True
    )
    esc = cases.add_parser("escalate", help=cmd_cases_escalate.__doc__)
    esc.add_argument("--after", type=float, default=30.0, help="minutes unclaimed (default 30)")
    esc.set_defaults(func=cmd_cases_escalate)
