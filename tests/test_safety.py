"""Pesticide safety: banned products and restricted ones on barred crops are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.knowledge import KnowledgeError, card_from_dict, load_cards
from bot.safety import check_card, load_list

REPO = Path(__file__).resolve().parents[1]
PLIST = load_list(REPO / "kb" / "banned_pesticides.yml")


def card(crop: str | list[str], chemical: list[str], status: str = "published") -> dict:
    return {
        "id": "t1",
        "crop": crop,
        "category": "pest",
        "topic": "蚜虫",
        "summary": "蚜虫。",
        "control": {"cultural": ["清除杂草"], "chemical": chemical},
        "status": status,
        "source": "test",
    }


def test_the_list_is_dated_and_has_the_known_bans() -> None:
    assert PLIST.as_of >= "2023-12-25"
    banned = {p.name for p in PLIST.products if p.barred_on is None}
    assert {
        "甲胺磷",
        "对硫磷",
        "甲基对硫磷",
        "久效磷",
        "磷胺",
        "百草枯",
        "克百威",
        "氧乐果",
    } <= banned


@pytest.mark.parametrize(
    ("crop", "advice", "refused_for"),
    [
        ("水稻", "用40%甲胺磷乳油喷雾", "甲胺磷"),
        ("小麦", "每亩用1605稀释后喷雾", "对硫磷"),
        ("大白菜", "可用毒死蜱灌根", "毒死蜱"),  # restricted: barred on vegetables
        ("茶叶", "喷氰戊菊酯", "氰戊菊酯"),  # restricted: barred on tea
        ("猕猴桃", "用乐果喷雾", "乐果"),  # restricted: barred on fruit
        ("柑橘", "丁硫克百威颗粒剂撒施", "丁硫克百威"),  # not misread as banned 克百威
    ],
)
def test_unsafe_advice_is_refused(crop: str, advice: str, refused_for: str) -> None:
    problems = check_card(card_from_dict(card(crop, [advice])), PLIST)
    assert len(problems) == 1 and f"recommends {refused_for}" in problems[0]


@pytest.mark.parametrize(
    ("crop", "advice"),
    [
        ("水稻", "可用毒死蜱防治稻纵卷叶螟，按标签用量"),  # restricted, but not on rice
        ("水稻", "乙酰甲胺磷按标签用量"),  # contains 甲胺磷, is not it; allowed on rice
        ("大白菜", "严禁使用甲胺磷、对硫磷等高毒农药"),  # a warning, not a recommendation
        ("小麦", "2016年起按新标准"),  # a date is not 1605 or 3911
        ("玉米", "选用吡虫啉、噻虫嗪等，按标签用量"),
    ],
)
def test_safe_advice_passes(crop: str, advice: str) -> None:
    assert check_card(card_from_dict(card(crop, [advice])), PLIST) == []


def test_a_card_about_two_animals_or_crops_is_checked_for_each() -> None:
    assert check_card(card_from_dict(card(["水稻", "白菜"], ["毒死蜱喷雾"])), PLIST)


def test_loading_refuses_a_published_unsafe_card_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "cards").mkdir()
    (tmp_path / "banned_pesticides.yml").write_text(
        (REPO / "kb" / "banned_pesticides.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "cards" / "x.yml").write_text(
        yaml.safe_dump({"cards": [card("大白菜", ["用甲胺磷喷雾"])]}, allow_unicode=True),
        encoding="utf-8",
    )
    with pytest.raises(KnowledgeError, match="t1: recommends 甲胺磷, banned"):
        load_cards(tmp_path)
    # The same card as a draft is kept (never answered) for someone to fix.
    (tmp_path / "cards" / "x.yml").write_text(
        yaml.safe_dump({"cards": [card("大白菜", ["用甲胺磷喷雾"], "draft")]}, allow_unicode=True),
        encoding="utf-8",
    )
    assert [c.status for c in load_cards(tmp_path)] == ["draft"]


def test_every_curated_card_is_safe() -> None:
    cards = load_cards(REPO / "kb")  # raises on the first unsafe published card
    assert all(check_card(c, PLIST) == [] for c in cards)
