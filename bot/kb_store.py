"""Cards in the database: load the curated YAML, read published cards, record feedback.

Repository functions take the caller's session (`*, session`); the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.kb_models import ORIGIN_CURATED, KbCard, KbFeedback
from bot.knowledge import CONTROL_ORDER, KB_DIR, Card, load_cards


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(timezone.utc)


def _content(card: Card) -> dict[str, Any]:
    return {
        "crops": list(card.crops),
        "category": card.category,
        "topic": card.topic,
        "aliases": list(card.aliases),
        "summary": card.summary,
        "symptoms": card.symptoms,
        "cause": card.cause,
        "control": {k: list(card.control[k]) for k in CONTROL_ORDER if card.control.get(k)},
        "season": card.season,
        "region": card.region,
        "source": card.source,
        "reviewer": card.reviewer,
        "reviewed": card.reviewed,
        "status": card.status,
        "origin": card.origin,
        "flags": list(card.flags),
    }


def content_hash(card: Card, origin_ref: str | None = None) -> str:
    """A digest of everything stored about `card`: unchanged content is not rewritten."""
    raw = json.dumps([_content(card), origin_ref], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def card_of(row: KbCard) -> Card:
    """The in-memory card of a row."""
    crops = tuple(row.crops or ())
    return Card(
        id=row.id,
        crop="、".join(crops),
        crops=crops,
        category=row.category,
        topic=row.topic,
        summary=row.summary,
        aliases=tuple(row.aliases or ()),
        symptoms=row.symptoms or "",
        cause=row.cause or "",
        control={k: tuple(v) for k, v in (row.control or {}).items() if v},
        season=row.season or "",
        region=row.region or "",
        source=row.source or "",
        reviewer=row.reviewer or "",
        reviewed=row.reviewed or "",
        status=row.status,
        origin=row.origin,
        flags=tuple(row.flags or ()),
    )


@dataclass
class UpsertCounts:
    """What an idempotent load or import did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0


def upsert_cards(
    session: Session,
    cards: Iterable[tuple[Card, str | None]],
    counts: UpsertCounts | None = None,
) -> UpsertCounts:
    """Insert new cards, update changed ones, leave unchanged ones alone (by id)."""
    counts = counts or UpsertCounts()
    batch = list(cards)
    existing = {
        r.id: r
        for r in session.execute(
            select(KbCard).where(KbCard.id.in_([c.id for c, _ in batch]))
        ).scalars()
    }
    now = utcnow()
    for card, ref in batch:
        digest = content_hash(card, ref)
        row = existing.get(card.id)
        if row is None:
            row = KbCard(id=card.id, created_at=now, helpful=0, not_helpful=0)
            session.add(row)
            counts.inserted += 1
        elif row.content_hash == digest:
            counts.unchanged += 1
            continue
        else:
            counts.updated += 1
        for key, value in _content(card).items():
            setattr(row, key, value)
        row.origin_ref = ref
        row.content_hash = digest
        row.updated_at = now
    session.flush()
    return counts


def load_curated(session: Session, kb_dir: Path = KB_DIR) -> UpsertCounts:
    """`ketepai kb load`: the curated YAML cards into the database, idempotently.

    Raises KnowledgeError (nothing written) on a malformed or unsafe card. A curated card no
    longer in the YAML is retired, not deleted: feedback refers to it.
    """
    cards = load_cards(kb_dir)
    counts = upsert_cards(session, [(c, None) for c in cards])
    gone = select(KbCard.id).where(
        KbCard.origin == ORIGIN_CURATED,
        KbCard.status != "retired",
        KbCard.id.not_in([c.id for c in cards]),
    )
    stale = list(session.execute(gone).scalars())
    if stale:
        session.execute(
            update(KbCard)
            .where(KbCard.id.in_(stale))
            .values(status="retired", updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    counts.retired = len(stale)
    return counts


def published_cards(session: Session) -> list[Card]:
    """Every published card, in id order."""
    rows = session.execute(
        select(KbCard).where(KbCard.status == "published").order_by(KbCard.id)
    ).scalars()
    return [card_of(r) for r in rows]


def get_card(session: Session, card_id: str) -> Card | None:
    """One card by id, whatever its status."""
    row = session.get(KbCard, card_id)
    return card_of(row) if row is not None else None


def signature(session: Session) -> tuple[int, str]:
    """A cheap fingerprint of the cards: changes whenever a card is added, changed or deleted."""
    count, newest = session.execute(
        select(func.count(KbCard.id), func.max(KbCard.updated_at))
    ).one()
    return int(count), str(newest)


def record_feedback(
    session: Session, *, card_id: str, sender: str, helpful: bool, text: str | None
) -> bool:
    """Keep a farmer's verdict on a card and bump its counter; False if there is no such card."""
    if session.get(KbCard, card_id) is None:
        return False
    session.add(
        KbFeedback(card_id=card_id, sender=sender, helpful=helpful, text=text, created_at=utcnow())
    )
    column = KbCard.helpful if helpful else KbCard.not_helpful
    # Counters change without touching updated_at: feedback is not new content to re-index.
    session.execute(
        update(KbCard)
        .where(KbCard.id == card_id)
        .values({column: column + 1})
        .execution_options(synchronize_session=False)
    )
    return True


def failing_cards(session: Session, min_votes: int = 3) -> list[tuple[str, int, int]]:
    """Cards farmers often say did not help, worst first: (id, helpful, not helpful)."""
    rows = session.execute(
        select(KbCard.id, KbCard.helpful, KbCard.not_helpful)
        .where(KbCard.helpful + KbCard.not_helpful >= min_votes)
        .where(KbCard.not_helpful > KbCard.helpful)
        .order_by(KbCard.not_helpful.desc())
    ).all()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
