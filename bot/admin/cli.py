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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `report`."""
    rep = sub.add_parser("report", help=cmd_report.__doc__)
    rep.add_argument("--month", required=True, help="YYYY-MM (Beijing time)")
    rep.add_argument("--out", required=True, help="the .xlsx file to write")
    rep.add_argument("--county", help="only this county (default: every county)")
    rep.set_defaults(func=cmd_report)
