"""Structure of the hold-out question set for the knowledge-base benchmark (tests/kb/holdout.yml).

Only the file's shape and labels are checked here, against kb/cards/*.yml and kb/names.yml:
no retrieval is run (the set must stay untouched by tuning).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / "tests" / "kb" / "holdout.yml"
CARDS_DIR = ROOT / "kb" / "cards"
NAMES = ROOT / "kb" / "names.yml"
# Sets that were used while tuning: the hold-out set must share no question with them.
TUNING_SETS = [
    ROOT / "tests" / "kb" / n for n in ("questions.yml", "dev_questions.yml", "dev_check.yml")
]

CATEGORIES = {
    "disease",
    "pest",
    "cultivation",
    "fertilizer",
    "pesticide_use",
    "storage",
    "livestock",
}
FIELDS = {"q", "crop", "category", "card", "also"}
COPY_LEN = 10  # a run of this many characters shared with a card's text counts as copied


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def questions() -> list[dict[str, Any]]:
    data = _load(HOLDOUT)
    assert isinstance(data, dict) and isinstance(data.get("questions"), list), (
        "holdout.yml must be a mapping with a 'questions' list"
    )
    return data["questions"]


@pytest.fixture(scope="module")
def cards() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(CARDS_DIR.glob("*.yml")):
        for card in _load(path).get("cards") or []:
            out[card["id"]] = card
    assert out, "no cards found in kb/cards"
    return out


@pytest.fixture(scope="module")
def names() -> dict[str, Any]:
    return _load(NAMES)


def _norm(text: str) -> str:
    """Question text without spaces and punctuation, for duplicate checks."""
    return re.sub(r"[\s\W_]+", "", text).lower()


def _card_crops(card: dict[str, Any]) -> list[str]:
    crop = card["crop"]
    return list(crop) if isinstance(crop, list) else [crop]


def _card_text(card: dict[str, Any]) -> str:
    parts: list[str] = [
        str(card.get(k) or "")
        for k in ("topic", "summary", "symptoms", "cause", "season", "region")
    ]
    parts += [str(a) for a in card.get("aliases") or []]
    for steps in (card.get("control") or {}).values():
        parts += [str(s) for s in steps or []]
    return "\n".join(parts)


def test_shape_and_size(questions: list[dict[str, Any]]) -> None:
    assert len(questions) >= 200, f"only {len(questions)} questions, want at least 200"
    for i, item in enumerate(questions):
        assert isinstance(item, dict), f"entry {i} is not a mapping: {item!r}"
        assert set(item) <= FIELDS, f"entry {i} has unknown fields {set(item) - FIELDS}"
        assert {"q", "crop", "category", "card"} <= set(item), f"entry {i} misses a field: {item!r}"
        assert isinstance(item["q"], str) and item["q"].strip(), f"entry {i} has an empty question"
        assert len(item["q"]) <= 80, (
            f"entry {i} is longer than a WeChat message a farmer types: {item['q']}"
        )
        assert item["category"] is None or item["category"] in CATEGORIES, (
            f"entry {i} ({item['q']}): unknown category {item['category']!r}"
        )


def test_no_duplicate_questions(questions: list[dict[str, Any]]) -> None:
    seen = Counter(_norm(item["q"]) for item in questions)
    dups = [q for q, n in seen.items() if n > 1]
    assert not dups, f"duplicate questions: {dups}"


def test_card_ids_exist_and_are_published(
    questions: list[dict[str, Any]], cards: dict[str, dict[str, Any]]
) -> None:
    for item in questions:
        ids = ([item["card"]] if item["card"] else []) + list(item.get("also") or [])
        for cid in ids:
            assert cid in cards, f"{item['q']}: card {cid!r} is not in kb/cards"
            assert cards[cid].get("status") == "published", (
                f"{item['q']}: card {cid!r} is {cards[cid].get('status')}, not answerable"
            )
        if item.get("also"):
            assert item["card"], f"{item['q']}: 'also' without a card"
            assert item["card"] not in item["also"], f"{item['q']}: card repeated in 'also'"


def test_category_matches_card(
    questions: list[dict[str, Any]], cards: dict[str, dict[str, Any]]
) -> None:
    for item in questions:
        if item["card"]:
            assert item["category"] == cards[item["card"]]["category"], (
                f"{item['q']}: category {item['category']} but card {item['card']} is "
                f"{cards[item['card']]['category']}"
            )


def test_crops_exist_and_fit_the_card(
    questions: list[dict[str, Any]], cards: dict[str, dict[str, Any]], names: dict[str, Any]
) -> None:
    crops: dict[str, list[str]] = names["crops"]
    groups: dict[str, list[str]] = names.get("groups") or {}
    for item in questions:
        crop = item["crop"]
        if crop is None:
            continue
        assert crop in crops, f"{item['q']}: crop {crop!r} is not a canonical name in kb/names.yml"
        if not item["card"]:
            continue
        card = cards[item["card"]]
        card_crops = _card_crops(card)
        fits = (
            crop in card_crops
            or "通用" in card_crops
            or any(crop in groups.get(c, []) for c in card_crops)
            # a card filed under one crop that names others in its own text (缺硼: 油菜, 萝卜 ...)
            or any(n in _card_text(card) for n in [crop, *crops[crop]])
        )
        assert fits, f"{item['q']}: crop {crop} does not fit card {item['card']} ({card_crops})"


def test_null_share_and_kinds(questions: list[dict[str, Any]]) -> None:
    nulls = [item for item in questions if not item["card"]]
    assert len(nulls) / len(questions) >= 0.15, (
        f"only {len(nulls)}/{len(questions)} questions with card: null"
    )
    # both kinds of null: no card for the crop/problem (category set), off-topic/vague (null)
    assert any(item["category"] is None for item in nulls)
    assert any(item["category"] is not None for item in nulls)
    assert all(item.get("also") is None for item in nulls)


def test_spread_over_cards_categories_and_crops(
    questions: list[dict[str, Any]], cards: dict[str, dict[str, Any]]
) -> None:
    per_card = Counter(item["card"] for item in questions if item["card"])
    too_many = {c: n for c, n in per_card.items() if n > 3}
    assert not too_many, f"more than three questions for {too_many}"
    asked = {item["category"] for item in questions if item["card"]}
    assert asked == CATEGORIES, f"categories without a question: {CATEGORIES - asked}"
    published = [c for c in cards.values() if c.get("status") == "published"]
    card_crops = {crop for c in published for crop in _card_crops(c)}
    covered = {crop for cid in per_card for crop in _card_crops(cards[cid])}
    assert card_crops <= covered, f"crops with cards but no question: {card_crops - covered}"


def test_no_text_copied_from_cards(
    questions: list[dict[str, Any]], cards: dict[str, dict[str, Any]]
) -> None:
    grams: set[str] = set()
    for card in cards.values():
        text = _norm(_card_text(card))
        grams.update(text[i : i + COPY_LEN] for i in range(len(text) - COPY_LEN + 1))
    for item in questions:
        q = _norm(item["q"])
        copied = [
            q[i : i + COPY_LEN]
            for i in range(len(q) - COPY_LEN + 1)
            if q[i : i + COPY_LEN] in grams
        ]
        assert not copied, f"{item['q']}: copies card text {copied[0]!r}"


def _strings(node: Any) -> list[str]:
    """Every string anywhere in a loaded YAML document (whatever the set's layout)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_shares_no_question_with_the_tuning_sets(questions: list[dict[str, Any]]) -> None:
    """Checked by machine only: the writer of holdout.yml never opened these files."""
    tuned: set[str] = set()
    for path in TUNING_SETS:
        if not path.exists():
            continue
        tuned.update(_norm(s) for s in _strings(_load(path)))
    overlap = [item["q"] for item in questions if _norm(item["q"]) in tuned]
    assert not overlap, f"questions also in a tuning set: {overlap}"
