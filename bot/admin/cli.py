"""`ketepai report --month YYYY-MM --out FILE.xlsx`: the monthly assessment report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.orm import Session


def cmd_report(args: argparse.Namespace) -> int:
    """Write the monthly service report for assessment (per commissioner and county) as Excel."""
    from bot.admin.report import write_report
    from bot.admin.report_query import ReportError
    from bot.handoff_cli import _in_transaction

    out = Path(args.out)

    def work(session: Session) -> None:
        write_report(args.month, out, session=session, county=args.county)

    try:
        _in_transaction(work)
    except ReportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(f"wrote {out}\n")
    return 0


def cmd_farmer_delete(args: argparse.Namespace) -> int:
    """Delete a farmer's personal data on request (anonymised counts stay; audited)."""
    import os

    from bot.case_core import Actor
    from bot.farmer_data import delete_farmer, wipe_rasa_tracker
    from bot.handoff_cli import _in_transaction

    folder = Path(os.environ.get("KTP_MEDIA_DIR") or "var/media")
    actor = Actor(f"cli:{os.environ.get('USER', 'unknown')}"[:96], admin=True)
    wipe_rasa_tracker(args.openid)
    done = _in_transaction(lambda s: delete_farmer(s, args.openid, folder, actor))
    sys.stdout.write(
        f"deleted: {done.messages} messages, {done.conversations} conversations, "
        f"{done.cases} cases, {done.media_files} media files (now {done.token})\n"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `report` and `farmer delete`."""
    farmer = sub.add_parser("farmer", help="farmers' personal data").add_subparsers(
        dest="farmer", required=True
    )
    fdel = farmer.add_parser("delete", help=cmd_farmer_delete.__doc__)
    fdel.add_argument("--openid", required=True, help="the farmer's openid")
    fdel.set_defaults(func=cmd_farmer_delete)
    rep = sub.add_parser("report", help=cmd_report.__doc__)
    rep.add_argument("--month", required=True, help="YYYY-MM (Beijing time)")
    rep.add_argument("--out", required=True, help="the .xlsx file to write")
    rep.add_argument("--county", help="only this county (default: every county)")
    rep.set_defaults(func=cmd_report)
