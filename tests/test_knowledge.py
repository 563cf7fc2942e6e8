"""The knowledge base: the curated cards load, names resolve, the right card is found."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.knowledge import (
    CATEGORIES,
    KnowledgeError,
    card_from_dict,
    load_cards,
    load_names,
)
from bot.nlu_names import jieba_userdict, lookups_yaml

REPO = Path(__file__).resolve().parents[1]


def card(**kw: object) -> dict:
    base = {
        "id": "c1",
        "crop": "猕猴桃",
        "category": "disease",
        "topic": "褐斑病",
        "summary": "猕猴桃褐斑病：叶上褐色大斑。",
        "status": "published",
    }
    base.update(kw)
    return base


def test_curated_cards_load_and_are_well_formed() -> None:
    cards = load_cards(REPO / "kb")
    assert len(cards) >= 50
    assert {c.category for c in cards} <= set(CATEGORIES)
    for c in cards:
        assert c.source, f"{c.id} has no source"
        assert c.crop in c.summary or c.topic in c.summary or len(c.summary) <= 120, c.id


def test_every_card_crop_is_a_canonical_name_in_names_yml() -> None:
    names = load_names(REPO / "kb")
    cards = load_cards(REPO / "kb")
    unknown = sorted({crop for c in cards for crop in c.crops if crop not in names.crops})
    assert unknown == []


def test_aliases_resolve_to_canonical_names() -> None:
    names = load_names(REPO / "kb")
    assert names.canonical_crop("奇异果") == "猕猴桃"
    assert names.canonical_pest("吊丝虫") == "小菜蛾"
    assert names.canonical_pest("绿虫") == "菜青虫"
    assert names.find_crop("我家洋芋叶子黑了") == "马铃薯"
    assert names.find_crop("今天天气不错") is None


def test_no_name_belongs_to_two_canonical_names() -> None:
    names = load_names(REPO / "kb")
    for table in (names.crops, names.pests):
        seen: dict[str, str] = {}
        for canonical, aliases in table.items():
            for form in (canonical, *aliases):
                assert form not in seen, f"{form} under {seen.get(form)} and {canonical}"
                seen[form] = canonical


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "weather"}, "unknown category"),
        ({"summary": ""}, "missing 'summary'"),
        ({"control": {"magic": ["x"]}}, "unknown control"),
    ],
)
def test_malformed_cards_are_refused(change: dict, message: str) -> None:
    with pytest.raises(KnowledgeError, match=message):
        card_from_dict(card(**change))


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "a.yml").write_text(
        yaml.safe_dump({"cards": [card()]}, allow_unicode=True)
    )
    (tmp_path / "cards" / "b.yml").write_text(
        yaml.safe_dump({"cards": [card()]}, allow_unicode=True)
    )
    with pytest.raises(KnowledgeError, match=r"also in a\.yml"):
        load_cards(tmp_path)


def test_generated_name_files_are_up_to_date() -> None:
    """`ketepai nlu names` was run after the last change to kb/ (else: run `make names`)."""
    names = load_names(REPO / "kb")
    lookups = (REPO / "nlu_data" / "lookups" / "names.yml").read_text(encoding="utf-8")
    userdict = (REPO / "nlu_data" / "jieba" / "userdict.txt").read_text(encoding="utf-8")
    assert lookups == lookups_yaml(names), "run `make names`"
    assert userdict == jieba_userdict(names), "run `make names`"
    parsed = yaml.safe_load(lookups)
    synonyms = {s["synonym"]: s["examples"] for s in parsed["nlu"] if "synonym" in s}
    assert "- 奇异果" in synonyms["猕猴桃"]
