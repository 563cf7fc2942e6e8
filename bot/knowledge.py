"""The knowledge base: names with aliases, cards, and finding the card that answers a question.

Pure functions over data loaded from `kb/`; no I/O at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

KB_DIR = Path(os.environ.get("KTP_KB_DIR") or Path(__file__).resolve().parents[1] / "kb")
CATEGORIES = (
    "disease",
    "pest",
    "cultivation",
    "fertilizer",
    "pesticide_use",
    "storage",
    "livestock",
)
CONTROL_ORDER = ("cultural", "physical", "biological", "chemical")
CONTROL_LABELS = {"cultural": "农业", "physical": "物理", "biological": "生物", "chemical": "药剂"}


class KnowledgeError(ValueError):
    """The knowledge-base files are malformed or unsafe."""


@dataclass(frozen=True)
class Names:
    """Canonical crop and pest/disease names, each with its aliases."""

    crops: dict[str, tuple[str, ...]]
    pests: dict[str, tuple[str, ...]]

    def canonical_crop(self, word: str) -> str | None:
        """The canonical crop for a name or alias."""
        return _lookup(self.crops, word)

    def canonical_pest(self, word: str) -> str | None:
        """The canonical pest/disease for a name or alias."""
        return _lookup(self.pests, word)

    def find_crop(self, text: str) -> str | None:
        """The canonical crop named in `text` (longest alias first), if any."""
        return _scan(self.crops, text)

    def find_pest(self, text: str) -> str | None:
        """The canonical pest/disease named in `text` (longest alias first), if any."""
        return _scan(self.pests, text)


def _lookup(table: dict[str, tuple[str, ...]], word: str) -> str | None:
    word = word.strip()
    for canonical, aliases in table.items():
        if word == canonical or word in aliases:
            return canonical
    return None


def _scan(table: dict[str, tuple[str, ...]], text: str) -> str | None:
    forms = sorted(
        ((form, canonical) for canonical, aliases in table.items() for form in (canonical, *aliases)),
        key=lambda fc: -len(fc[0]),
    )
    for form, canonical in forms:
        if form and form in text:
            return canonical
    return None


@dataclass(frozen=True)
class Card:
    """One knowledge-base card: a problem of one crop, and what to do about it."""

    id: str
    crop: str
    category: str
    topic: str
    summary: str
    aliases: tuple[str, ...] = ()
    symptoms: str = ""
    cause: str = ""
    control: dict[str, tuple[str, ...]] = field(default_factory=dict)
    season: str = ""
    region: str = ""
    source: str = ""
    reviewer: str = ""
    reviewed: str = ""
    status: str = "draft"

    @property
    def title(self) -> str:
        """「猕猴桃 · 褐斑病」: names the crop and the problem, as the contract asks."""
        return f"{self.crop} · {self.topic}"

    def searchable_text(self) -> str:
        """The text a question is compared with."""
        return " ".join([self.topic, *self.aliases, self.summary, self.symptoms, self.cause])


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "；".join(str(v).strip() for v in value)
    return str(value).strip()


def card_from_dict(raw: dict[str, Any], origin: str = "") -> Card:
    """Build a card from its YAML form, checking the required fields."""
    where = f"{origin}: card {raw.get('id', '?')}"
    for key in ("id", "crop", "category", "topic", "summary"):
        if not raw.get(key):
            raise KnowledgeError(f"{where}: missing '{key}'")
    if raw["category"] not in CATEGORIES:
        raise KnowledgeError(f"{where}: unknown category {raw['category']!r}")
    control_raw = raw.get("control") or {}
    if not isinstance(control_raw, dict):
        raise KnowledgeError(f"{where}: 'control' must be a mapping")
    unknown = set(control_raw) - set(CONTROL_ORDER)
    if unknown:
        raise KnowledgeError(f"{where}: unknown control kind(s) {sorted(unknown)}")
    control = {
        kind: tuple(_text(x) for x in (control_raw.get(kind) or []) if _text(x))
        for kind in CONTROL_ORDER
        if control_raw.get(kind)
    }
    return Card(
        id=str(raw["id"]),
        crop=str(raw["crop"]).strip(),
        category=str(raw["category"]),
        topic=str(raw["topic"]).strip(),
        summary=_text(raw["summary"]),
        aliases=tuple(str(a).strip() for a in raw.get("aliases") or []),
        symptoms=_text(raw.get("symptoms")),
        cause=_text(raw.get("cause")),
        control=control,
        season=_text(raw.get("season")),
        region=_text(raw.get("region")),
        source=_text(raw.get("source")),
        reviewer=_text(raw.get("reviewer")),
        reviewed=_text(raw.get("reviewed")),
        status=str(raw.get("status") or "draft"),
    )


def load_cards(kb_dir: Path = KB_DIR) -> list[Card]:
    """Every card in `kb_dir/cards/*.yml`; ids must be unique."""
    cards: list[Card] = []
    seen: dict[str, str] = {}
    for path in sorted((kb_dir / "cards").glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for raw in doc.get("cards") or []:
            card = card_from_dict(raw, path.name)
            if card.id in seen:
                raise KnowledgeError(f"{path.name}: card id {card.id!r} also in {seen[card.id]}")
            seen[card.id] = path.name
            cards.append(card)
    return cards


def load_names(kb_dir: Path = KB_DIR, cards: Iterable[Card] = ()) -> Names:
    """Names from `names.yml`, with the crops, topics and aliases of `cards` merged in."""
    doc = yaml.safe_load((kb_dir / "names.yml").read_text(encoding="utf-8")) or {}
    crops = {k: list(v or []) for k, v in (doc.get("crops") or {}).items()}
    pests = {k: list(v or []) for k, v in (doc.get("pests") or {}).items()}
    # Each form (name or alias) belongs to exactly one canonical name, or synonyms would clash.
    pest_forms = {f for k, v in pests.items() for f in (k, *v)}
    crop_forms = {f for k, v in crops.items() for f in (k, *v)}
    for card in cards:
        if card.crop not in crop_forms:
            crops[card.crop] = []
            crop_forms.add(card.crop)
        if card.category not in {"disease", "pest"}:
            continue
        if card.topic not in pest_forms:
            pests[card.topic] = []
            pest_forms.add(card.topic)
        if card.topic in pests:
            for alias in card.aliases:
                if alias not in pest_forms:
                    pests[card.topic].append(alias)
                    pest_forms.add(alias)
    return Names(
        crops={k: tuple(dict.fromkeys(v)) for k, v in crops.items()},
        pests={k: tuple(dict.fromkeys(v)) for k, v in pests.items()},
    )


def bigrams(text: str) -> set[str]:
    """Character bigrams of the CJK/alphanumeric runs in `text` (robust to jieba's cuts)."""
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)}


@dataclass(frozen=True)
class Match:
    """A card found for a question, with how sure we are (0..1)."""

    card: Card
    score: float


def find_card(
    cards: Iterable[Card],
    *,
    text: str,
    crop: str | None,
    pest: str | None,
    category: str | None,
) -> Match | None:
    """The published card that best answers the question, or None if nothing fits.

    The crop must match when one is known; a named pest/disease that matches the card's topic or
    aliases counts most; the rest is bigram overlap between the question and the card.
    """
    query = bigrams(text)
    best: Match | None = None
    for card in cards:
        if card.status != "published" or (crop and card.crop != crop):
            continue
        score = 0.0
        if pest and (pest == card.topic or pest in card.aliases):
            score += 0.6
        if category and category == card.category:
            score += 0.15
        if query:
            overlap = len(query & bigrams(card.searchable_text())) / len(query)
            score += 0.4 * overlap
        if crop:
            score += 0.1
        if best is None or score > best.score:
            best = Match(card, min(score, 1.0))
    return best


def render_answer(card: Card, max_measures: int = 4) -> str:
    """A phone-screen answer: title, summary, the first measures in order, how to go on."""
    lines = [f"【{card.title}】", card.summary]
    measures = [
        f"{CONTROL_LABELS[kind]}：{item}"
        for kind in CONTROL_ORDER
        for item in card.control.get(kind, ())
    ][:max_measures]
    if measures:
        lines.append("")
        lines.append("怎么办：")
        lines.extend(f"{i}. {m}" for i, m in enumerate(measures, 1))
    lines.append("")
    lines.append("不是这个问题？请补充症状，或回复「转人工」请专家看看。")
    return "\n".join(lines)


@lru_cache(maxsize=4)
def knowledge(kb_dir: Path = KB_DIR) -> tuple[list[Card], Names]:
    """Cards and names, loaded once per process."""
    cards = load_cards(kb_dir)
    return cards, load_names(kb_dir, cards)
