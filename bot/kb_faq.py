"""FAQ: question variants answered with one knowledge-base card, consulted before retrieval.

An admin adds an FAQ (variants + card) on /admin/faq: it is stored in `faq_entries`, and every
active FAQ's variants are written to nlu_data/nlu/faq.yml as examples of its consultation intent
(so that, after 「重新训练」, Rasa sends such messages to the answer action). The answer action
asks `LiveFaq.match` first: a farmer's text close to a variant gets that card, whatever
retrieval would rank first. No Rasa retrieval intent, and bot/kb_search.py is untouched.
"""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from difflib import SequenceMatcher
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.admin_models import FaqEntry
from bot.kb_models import KbCard
from bot.kb_store import get_card
from bot.knowledge import Names

ROOT = Path(__file__).resolve().parents[1]
FAQ_FILE = ROOT / "nlu_data" / "nlu" / "faq.yml"
CONSULT_INTENTS = (
    "ask_disease",
    "ask_pest",
    "ask_cultivation",
    "ask_fertilizer",
    "ask_pesticide_use",
    "ask_storage",
    "ask_livestock",
)
# Close enough to a variant: the same question with a word or two changed, not a related one.
MATCH_AT = 0.85
MAX_VARIANTS = 20
_NOISE = re.compile(r"[\s\W_]+")
_FILLER = re.compile(r"(?:请问|老师|你好|您好|专家|一下|啊|呀|呢|吧|哦|嘛)")


class FaqError(ValueError):
    """An FAQ that cannot be added (unknown card or intent, no variants)."""


def normalize(text: str) -> str:
    """Half-width, lower case, without punctuation, spaces or polite filler words."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _NOISE.sub("", _FILLER.sub("", text))


def similarity(a: str, b: str) -> float:
    """0..1 over normalized characters (difflib's ratio)."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return 0.0
    return 1.0 if na == nb else SequenceMatcher(None, na, nb).ratio()


@dataclass(frozen=True)
class Hit:
    """The FAQ a text matched."""

    card_id: str
    variant: str
    score: float


def best_match(text: str, entries: list[tuple[str, list[str]]], at: float = MATCH_AT) -> Hit | None:
    """The closest variant of any FAQ (card id, variants) scoring at least `at`."""
    best: Hit | None = None
    for card_id, variants in entries:
        for v in variants:
            s = similarity(text, v)
            if s >= at and (best is None or s > best.score):
                best = Hit(card_id, v, s)
    return best


def active_entries(session: Session) -> list[tuple[str, list[str]]]:
    """(card id, variants) of every active FAQ whose card is published, oldest first.

    A card retired (or sent back to draft) after its FAQ was added must not reach farmers
    through the FAQ either."""
    rows = session.execute(
        select(FaqEntry)
        .join(KbCard, KbCard.id == FaqEntry.card_id)
        .where(FaqEntry.active, KbCard.status == "published")
        .order_by(FaqEntry.id)
    )
    return [(r.card_id, list(r.variants)) for r in rows.scalars()]


def intent_of_category(category: str) -> str | None:
    """The consultation intent of a card's category (disease → ask_disease)."""
    intent = f"ask_{category}"
    return intent if intent in CONSULT_INTENTS else None


def clean_variants(texts: list[str]) -> list[str]:
    """Trimmed, one-line, de-duplicated variants."""
    out: list[str] = []
    for t in texts:
        t = " ".join(t.replace("[", "").replace("]", "").split())
        if t and normalize(t) not in {normalize(x) for x in out}:
            out.append(t)
    return out


def add_faq(
    session: Session, *, card_id: str, intent: str, variants: list[str], actor: str
) -> FaqEntry:
    """Store an FAQ (the card must exist and be published; no intent: the card's category's);
    write faq.yml afterwards with `write_file`."""
    variants = clean_variants(variants)
    if not variants:
        raise FaqError("请至少写一个问法（标准问题或其他问法）")
    if len(variants) > MAX_VARIANTS:
        raise FaqError(f"问法最多 {MAX_VARIANTS} 条，现在有 {len(variants)} 条")
    if not card_id:
        raise FaqError("请选一张答案卡片")
    card = get_card(session, card_id)
    if card is None:
        raise FaqError(f"知识库里没有这张卡片：{card_id}")
    if card.status != "published":
        raise FaqError(f"卡片 {card_id}（{card.title}）还没有发布，先在「知识库」页审核发布")
    if not intent:
        intent = intent_of_category(card.category) or ""
    if intent not in CONSULT_INTENTS:
        raise FaqError(f"请选一个咨询类别（卡片类别「{card.category}」对不上咨询意图）")
    row = FaqEntry(
        card_id=card_id,
        intent=intent,
        variants=variants,
        active=True,
        created_by=actor[:96],
        created_at=datetime.now(timezone.utc),
    )
    session.add(row)
    session.flush()
    return row


def render_file(session: Session, names: Names) -> str:
    """Rasa training data of every active FAQ's variants, crop/pest annotated, validated."""
    from bot.admin import nlu_inbox

    examples: dict[str, list[str]] = {}
    for row in session.execute(select(FaqEntry).where(FaqEntry.active)).scalars():
        have = examples.setdefault(row.intent, [])
        have += [x for x in (nlu_inbox.annotate(v, names) for v in row.variants) if x not in have]
    text = nlu_inbox.render(examples) if examples else 'version: "3.1"\nnlu: []\n'
    if examples:
        nlu_inbox.validate(text)
    return text


def write_file(text: str, path: Path = FAQ_FILE) -> None:
    """Replace faq.yml atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class LiveFaq:
    """The action server's FAQs, re-read from the database every few seconds."""

    def __init__(self, sessions: sessionmaker, every_s: float = 5.0) -> None:
        self._sessions, self._every = sessions, every_s
        self._entries: list[tuple[str, list[str]]] = []
        self._read_at = -1e9
        self._lock = threading.Lock()

    def match(self, text: str) -> Hit | None:
        """The FAQ hit for `text`, if any (no FAQs when the table cannot be read)."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._every:
                try:
                    with self._sessions() as session:
                        self._entries = active_entries(session)
                except Exception:  # no table yet, or the database is down: retrieval only
                    self._entries = []
                self._read_at = time.monotonic()
            entries = self._entries
        return best_match(text, entries)
