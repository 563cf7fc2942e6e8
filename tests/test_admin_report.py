"""The monthly assessment report: figures from records, on SQLite and PostgreSQL, read back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy.orm import Session

from bot.admin import figures
from bot.admin.report import SHEETS, write_report
from bot.admin.report_query import ReportError, load_month, month_bounds
from bot.cli import main
from tests.admin_helpers import seed_month
from tests.handoff_helpers import data_key, session

__all__ = ["data_key", "session"]


def _sheet(path: Path, name: str) -> dict[str, dict[str, object]]:
    ws = load_workbook(path)[name]
    rows = list(ws.iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    return {str(r[0]): dict(zip(header, r, strict=True)) for r in rows[1:]}


def test_month_bounds_are_beijing_time() -> None:
    start, end = month_bounds("2026-12")
    assert start.astimezone(timezone.utc) == datetime(2026, 11, 30, 16, tzinfo=timezone.utc)
    assert end - start == timedelta(days=31)
    with pytest.raises(ReportError):
        month_bounds("2026-13")


def test_percentiles_by_nearest_rank() -> None:
    assert figures.median([]) is None and figures.p90([]) is None
    assert figures.median([10, 30]) == 20
    assert figures.p90([10, 30]) == 30
    assert figures.p90(list(range(1, 11))) == 9
    assert figures.p90(list(range(1, 12))) == 10


def test_report_figures_match_the_records(session: Session, tmp_path: Path) -> None:
    seed_month(session)
    out = tmp_path / "r" / "2026-11.xlsx"
    with session.begin():
        write_report("2026-11", out, session=session)
    assert load_workbook(out).sheetnames == list(SHEETS)

    county = _sheet(out, "按县")
    total = county["合计"]
    assert (total["咨询数"], total["机器人解答"], total["转人工"]) == (6, 2, 4)
    assert (total["接单数"], total["已回复"], total["已结案"], total["上门次数"]) == (3, 2, 2, 1)
    assert (total["未回复"], total["升级/转管理员"]) == (2, 1)
    zz = county["周至县"]
    assert (zz["咨询数"], zz["转人工"], zz["接单数"]) == (2, 2, 2)
    assert (zz["首次回复用时中位数(分)"], zz["首次回复用时P90(分)"]) == (20, 30)
    assert (zz["结案用时中位数(分)"], zz["结案用时P90(分)"]) == (90, 120)
    assert (zz["满意度均分"], zz["评分数"]) == (4, 2)
    assert (county["眉县"]["接单数"], county["眉县"]["未回复"]) == (1, 1)
    unknown = county["未知"]
    assert (unknown["咨询数"], unknown["机器人解答"], unknown["升级/转管理员"]) == (3, 2, 1)

    people = _sheet(out, "按专家")
    wang = people["王猕"]
    assert (wang["接单数"], wang["已回复"], wang["已结案"], wang["上门次数"]) == (2, 2, 2, 1)
    assert (wang["满意度均分"], wang["评分数"], wang["首次回复用时中位数(分)"]) == (4, 2, 20)
    assert (people["赵眉"]["接单数"], people["赵眉"]["未回复"]) == (1, 1)
    assert people["李果"]["接单数"] == 0  # on the roster, no cases: still listed

    cases = _sheet(out, "求助单明细")
    assert len(cases) == 4  # October's case is not in November's report
    assert all("fa" not in str(v) for row in cases.values() for v in row.values())


def test_county_scope_keeps_to_the_county(session: Session) -> None:
    seed_month(session)
    with session.begin():
        data = load_month("2026-11", session=session, county="眉县")
    assert [c.county for c in data.cases] == ["眉县"]
    assert [name for _, name, _ in data.roster] == ["赵眉"]
    assert len(data.consultations) == 1


def test_cli_writes_the_report(
    any_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", any_db_url)
    out = tmp_path / "m.xlsx"
    assert main(["report", "--month", "2026-11", "--out", str(out)]) == 0
    assert _sheet(out, "按县")["合计"]["咨询数"] == 0
    assert main(["report", "--month", "11-2026", "--out", str(out)]) == 2
    assert "YYYY-MM" in capsys.readouterr().err
