"""The knowledge base: names with aliases, cards, and finding the card that answers a question.

Pure functions over data loaded from `kb/`; no I/O at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
GENERAL = "通用"  # the crop of cards that hold for any crop (soil, fertilizer basics)
CONTROL_ORDER = ("cultural", "physical", "biological", "chemical")
CONTROL_LABELS = {"cultural": "农业", "physical": "物理", "biological": "生物", "chemical": "药剂"}


class KnowledgeError(ValueError):
    """The knowledge-base files are malformed or unsafe."""


@dataclass(frozen=True)
class Names:
    """Canonical crop and pest/disease names, each with its aliases."""

    crops: dict[str, tuple[str, ...]]
    pests: dict[str, tuple[str, ...]]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # 蔬菜 → its crops

    def groups_of(self, crop: str) -> list[str]:
        """The groups `crop` belongs to (its cards answer for it too)."""
        return [g for g, members in self.groups.items() if crop in members]

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
        (
            (form, canonical)
            for canonical, aliases in table.items()
            for form in (canonical, *aliases)
        ),
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
    crop: str  # as shown to the farmer: 「猕猴桃」, or 「牛、羊」 for a card about both
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
    crops: tuple[str, ...] = ()  # every canonical crop the card is about
    origin: str = "curated"  # or the import it came from ("pestdb:dasinong")
    flags: tuple[str, ...] = ()  # "unreviewed", "unsafe: ..."

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
    crops = tuple(
        str(c).strip() for c in (raw["crop"] if isinstance(raw["crop"], list) else [raw["crop"]])
    )
    return Card(
        id=str(raw["id"]),
        crop="、".join(crops),
        crops=crops,
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
    """Every card in `kb_dir/cards/*.yml`; ids must be unique, and no published card may
    recommend a banned pesticide, or a restricted one on a barred crop."""
    from bot.safety import check_card, load_list

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
    banned = kb_dir / "banned_pesticides.yml"
    if banned.is_file():
        plist = load_list(banned)
        problems = [p for c in cards if c.status == "published" for p in check_card(c, plist)]
        if problems:
            raise KnowledgeError("unsafe pesticide advice refused:\n  " + "\n  ".join(problems))
    return cards


def load_names(kb_dir: Path = KB_DIR) -> Names:
    """Canonical names and aliases from `names.yml`, the one place names live."""
    doc = yaml.safe_load((kb_dir / "names.yml").read_text(encoding="utf-8")) or {}
    tables = []
    for key in ("crops", "pests"):
        table = doc.get(key) or {}
        if not isinstance(table, dict):
            raise KnowledgeError(f"names.yml: '{key}' must map canonical names to alias lists")
        tables.append(
            {str(k): tuple(dict.fromkeys(str(a) for a in v or [])) for k, v in table.items()}
        )
    groups = {
        str(g): tuple(str(c) for c in members or [])
        for g, members in (doc.get("groups") or {}).items()
    }
    unknown = sorted({c for m in groups.values() for c in m if c not in tables[0]})
    if unknown:
        raise KnowledgeError(f"names.yml: groups name unknown crops {unknown}")
    return Names(crops=tables[0], pests=tables[1], groups=groups)


# Question words say nothing about which card fits; left in, 「什么时候施肥」 meets 「什么时候摘」.
STOP_PHRASES = sorted(
    "怎么办 怎么样 怎么回事 怎么弄 怎么搞 怎么 咋办 咋整 咋弄 咋回事 什么时候 "
    "什么 为什么 如何 多少 "
    "是不是 可不可以 可以吗 能不能 有没有 请问 请教 一下 这个 那个 我家 我的 我们 今年".split(),
    key=len,
    reverse=True,
)
