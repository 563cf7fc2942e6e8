"""The monthly assessment report: figures per commissioner and county, written as Excel."""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy.orm import Session

from bot.admin import figures
from bot.admin.figures import COLUMNS, Row
from bot.admin.report_query import CST, MonthData, load_month
from bot.case_core import STATUS_LABELS

SHEETS = ("说明", "按专家", "按县", "求助单明细")
CASE_COLUMNS = [
    "单号",
    "县",
    "作物",
    "问题类别",
    "状态",
    "负责专家",
    "提交时间",
    "首次回复",
    "上门",
    "结案",
    "评分",
    "升级",
]


def _local(value: datetime | None) -> str:
    return value.astimezone(CST).strftime("%Y-%m-%d %H:%M") if value else ""


def _rows_sheet(wb: Workbook, title: str, rows: list[Row]) -> None:
    ws = wb.create_sheet(title)
    ws.append([label for _, label in COLUMNS])
    for row in rows:
        data = asdict(row)
        ws.append([data[name] for name, _ in COLUMNS])
    _style(ws)


def _style(ws: Any) -> None:
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    for col in ws.columns:
        width = max(len(str(c.value or "")) for c in col)
        ws.column_dimensions[col[0].column_letter].width = min(max(8, width * 2), 40)


def build_workbook(data: MonthData, *, scope: str = "全省") -> Workbook:
    """The workbook of one month: definitions, per commissioner, per county, the cases."""
    wb = Workbook()
    info = wb.active
    info.title = SHEETS[0]
    info.append(["科特派助手 · 科技特派员服务月报"])
    info.append(["月份", data.month])
    info.append(["范围", scope])
    info.append(["生成时间", datetime.now(CST).strftime("%Y-%m-%d %H:%M")])
    info.append(["时区", "北京时间 (UTC+8)"])
    info.append([])
    for line in (figures.__doc__ or "").strip().splitlines()[2:]:
        info.append([line.strip()])
    info["A1"].font = Font(bold=True, size=14)
    info.column_dimensions["A"].width = 16
    _rows_sheet(wb, SHEETS[1], figures.commissioner_rows(data.cases, data.roster))
    _rows_sheet(wb, SHEETS[2], figures.county_rows(data.consultations, data.cases))
    ws = wb.create_sheet(SHEETS[3])
    ws.append(CASE_COLUMNS)
    # Attributable but without personal data: no openid, no phone, no transcript.
    for c in data.cases:
        ws.append(
            [
                c.id,
                c.county or figures.UNKNOWN,
                c.crop or "",
                c.category or "",
                STATUS_LABELS.get(c.status, c.status),
                c.commissioner or "",
                _local(c.created_at),
                _local(c.first_reply_at),
                _local(c.visited_at),
                _local(c.closed_at),
                c.rating,
                "是" if c.escalated else "",
            ]
        )
    _style(ws)
    return wb


def report_bytes(month: str, *, session: Session, county: str | None = None) -> bytes:
    """The month's report as .xlsx bytes (`county` None: every county)."""
    data = load_month(month, session=session, county=county)
    buffer = io.BytesIO()
    build_workbook(data, scope=county or "全部县").save(buffer)
    return buffer.getvalue()


def write_report(month: str, out: Path, *, session: Session, county: str | None = None) -> None:
    """Write the month's report to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(report_bytes(month, session=session, county=county))
