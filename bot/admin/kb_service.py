"""Knowledge-base work for admins: search, edit, publish (safety-checked), retire, Excel in/out."""

from __future__ import annotations

import dataclasses
import io
from datetime import date
from pathlib import Path

from openpyxl import Workbook, load_workbook
from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from bot.kb_models import KbCard
from bot.kb_store import UpsertCounts, card_of, upsert_cards
from bot.knowledge import CONTROL_LABELS, CONTROL_ORDER, KB_DIR, Card, card_from_dict
from bot.safety import check_card, load_list

SEP = "、"
TEXT_FIELDS = ("topic", "summary", "symptoms", "cause", "season", "region", "source")
# Excel columns: the card's fields, control measures one per line.
XLSX_COLUMNS = (
    "id",
    "crop",
    "category",
    "topic",
    "aliases",
    *TEXT_FIELDS[1:],
    *(f"control.{k}" for k in CONTROL_ORDER),
    "status",
)


# Not in the sheet's say: an unchanged card keeps its review; a changed or new one is a draft.
_KEPT = ("status", "flags", "origin", "reviewer", "reviewed")
_NEW = ("unreviewed",)


class KbEditError(ValueError):
    """A card edit or import that cannot be applied (said plainly to the admin)."""


def search(query: str, *, session: Session, limit: int = 200) -> list[KbCard]:
    """Cards matching `query` (id, topic, crops, summary); most 「没解决」 first, then by id."""
    stmt = select(KbCard)
    q = query.strip()
    if q:
        like = f"%{q}%"
        stmt = stmt.where(
            or_(
                KbCard.id.ilike(like),
                KbCard.topic.ilike(like),
                KbCard.summary.ilike(like),
                cast(KbCard.aliases, String).ilike(like),
                cast(KbCard.crops, String).ilike(like),
            )
        )
    stmt = stmt.order_by(
        (KbCard.not_helpful - KbCard.helpful).desc(), KbCard.not_helpful.desc(), KbCard.id
    )
    return list(session.execute(stmt.limit(limit)).scalars())


def get(card_id: str, *, session: Session) -> KbCard:
    """The card row, or KbEditError."""
    row = session.get(KbCard, card_id)
    if row is None:
        raise KbEditError(f"没有卡片 {card_id}")
    return row


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def edit(card_id: str, fields: dict[str, str], *, session: Session) -> Card:
    """Change a card's text and measures; an edited card goes back to draft for review."""
    current = card_of(get(card_id, session=session))
    changes: dict[str, object] = {k: fields[k].strip() for k in TEXT_FIELDS if k in fields}
    if not changes.get("topic", current.topic) or not changes.get("summary", current.summary):
        raise KbEditError("标题和摘要不能为空")
    if "aliases" in fields:
        changes["aliases"] = tuple(a.strip() for a in fields["aliases"].split(SEP) if a.strip())
    control = {k: _lines(fields.get(f"control.{k}", "")) for k in CONTROL_ORDER}
    changes["control"] = {k: v for k, v in control.items() if v}
    card = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    if card == current:
        return current
    flags = (*(f for f in current.flags if not f.startswith("unsafe")), "edited")
    card = dataclasses.replace(card, status="draft", flags=tuple(dict.fromkeys(flags)))
    upsert_cards(session, [(card, get(card_id, session=session).origin_ref)])
    return card


def publish(card_id: str, reviewer: str, *, session: Session, kb_dir: Path = KB_DIR) -> list[str]:
    """Publish after the pesticide safety check; the reasons it is unsafe (then not published)."""
    row = get(card_id, session=session)
    card = card_of(row)
    problems = check_card(card, load_list(kb_dir / "banned_pesticides.yml"))
    if problems:
        flags = [f for f in card.flags if not f.startswith("unsafe")]
        flags += [f"unsafe: {p}" for p in problems]
        new = dataclasses.replace(card, status="draft", flags=tuple(flags))
    else:
        new = dataclasses.replace(
            card,
            status="published",
            reviewer=reviewer,
            reviewed=date.today().isoformat(),
            flags=tuple(f for f in card.flags if f not in ("unreviewed", "edited")),
        )
    upsert_cards(session, [(new, row.origin_ref)])
    return problems


def retire(card_id: str, *, session: Session) -> None:
    """Take a card out of the bot's answers (kept: feedback refers to it)."""
    row = get(card_id, session=session)
    upsert_cards(session, [(dataclasses.replace(card_of(row), status="retired"), row.origin_ref)])


def export_xlsx(*, session: Session) -> bytes:
    """Every card as an Excel sheet (one row a card), for review offline and re-import."""
    wb = Workbook()
    ws = wb.active
    ws.title = "cards"
    ws.append(list(XLSX_COLUMNS))
    for row in session.execute(select(KbCard).order_by(KbCard.id)).scalars():
        c = card_of(row)
        ws.append(
            [
                c.id,
                SEP.join(c.crops),
                c.category,
                c.topic,
                SEP.join(c.aliases),
                *(getattr(c, f) for f in TEXT_FIELDS[1:]),
                *("\n".join(c.control.get(k, ())) for k in CONTROL_ORDER),
                c.status,
            ]
        )
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def import_xlsx(data: bytes, *, session: Session) -> UpsertCounts:
    """Cards from an Excel sheet in the export's columns; all arrive as drafts to review."""
    try:
        ws = load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    except Exception as exc:  # openpyxl raises many kinds for a file that is not xlsx
        raise KbEditError(f"不是有效的 Excel 文件：{exc}") from None
    rows = ws.iter_rows(values_only=True)
    header = [str(h or "").strip() for h in next(rows, ())]
    missing = {"id", "crop", "category", "topic", "summary"} - set(header)
    if missing:
        raise KbEditError(f"缺少列：{'、'.join(sorted(missing))}")
    cards = []
    for n, values in enumerate(rows, start=2):
        raw = {h: ("" if v is None else str(v)) for h, v in zip(header, values, strict=False)}
        if not raw.get("id"):
            continue
        doc: dict[str, object] = {k: v for k, v in raw.items() if not k.startswith("control.")}
        doc["crop"] = [c for c in raw["crop"].split(SEP) if c.strip()]
        doc["aliases"] = [a for a in raw.get("aliases", "").split(SEP) if a.strip()]
        doc["control"] = {
            k: list(_lines(raw.get(f"control.{k}", "")))
            for k in CONTROL_ORDER
            if raw.get(f"control.{k}")
        }
        try:
            card = card_from_dict(doc, origin=f"第 {n} 行")
        except ValueError as exc:
            raise KbEditError(str(exc)) from None
        existing = session.get(KbCard, card.id)
        if existing is None:
            cards.append((dataclasses.replace(card, origin="excel", flags=_NEW), None))
            continue
        current = card_of(existing)
        kept = {k: getattr(current, k) for k in _KEPT}
        if dataclasses.replace(card, **kept) != current:  # changed content: review it again
            kept.update(status="draft", flags=_NEW)
        cards.append((dataclasses.replace(card, **kept), existing.origin_ref))
    return upsert_cards(session, cards)


def control_label(kind: str) -> str:
    """「农业」 for "cultural"."""
    return CONTROL_LABELS.get(kind, kind)
