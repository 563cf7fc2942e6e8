"""Retrieval: the right card, crop filters, drafts never answered, calibrated decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.kb_answer import decide, render_clarify, render_details, render_summary
from bot.kb_search import Retriever, calibrate, grams, query_terms
from bot.knowledge import card_from_dict, load_cards, load_names

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def curated() -> Retriever:
    return Retriever(load_cards(REPO / "kb"), load_names(REPO / "kb"))


def card(**kw: object) -> dict:
    base = {
        "id": "c1",
        "crop": "猕猴桃",
        "category": "disease",
        "topic": "褐斑病",
        "summary": "猕猴桃褐斑病：叶上褐色大斑。",
        "symptoms": "叶缘起褐色大斑，雨后扩展。",
        "status": "published",
        "control": {"cultural": ["清扫落叶"], "chemical": ["发病初期喷杀菌剂，按标签用量"]},
    }
    base.update(kw)
    return base


def test_the_first_question_is_answered_with_kiwifruit_brown_spot(curated: Retriever) -> None:
    result = curated.search(
        text="猕猴桃叶子上有褐色斑点怎么办", crop="猕猴桃", pest=None, category="disease"
    )
    decision = decide(result)
    assert decision.kind == "answer" and decision.cards[0].id == "kiwi-brown-spot"
    answer = render_summary(decision.cards[0])
    assert "猕猴桃" in answer and "褐斑病" in answer and "回复1有用，2没解决" in answer


def test_skip_bigrams_join_a_spelled_out_name() -> None:
    assert "褐斑" in grams("褐色斑点")
    assert "褐斑" in query_terms("叶子上有褐色斑点怎么办")
    assert not any("怎么" in t for t in query_terms("怎么办"))


def test_named_pest_wins_and_the_crop_filters() -> None:
    cards = [
        card_from_dict(card(id="a", topic="溃疡病", summary="猕猴桃溃疡病：枝干流红褐色菌脓。")),
        card_from_dict(card(id="b")),
        card_from_dict(card(id="c", crop="核桃", topic="黑斑病", summary="核桃黑斑病。")),
    ]
    r = Retriever(cards)
    best = r.search(text="树干流水", crop="猕猴桃", pest="溃疡病", category="disease").best
    assert best is not None and best.card.id == "a"
    assert r.search(text="黑斑", crop="水稻", pest=None, category=None).best is None
    hits = r.search(text="黑斑病", crop="猕猴桃", pest=None, category=None).candidates
    assert "c" not in {c.card.id for c in hits}


def test_drafts_and_retired_cards_are_never_answered() -> None:
    r = Retriever(
        [card_from_dict(card(status="draft")), card_from_dict(card(id="r", status="retired"))]
    )
    assert (
        r.search(text="猕猴桃褐斑病", crop="猕猴桃", pest="褐斑病", category="disease").best is None
    )


def test_confidence_rises_with_probability_and_margin() -> None:
    assert calibrate(0.9, 0.5) > calibrate(0.6, 0.5) > calibrate(0.6, 0.0)
    assert 0.0 < calibrate(0.0, 0.0) < 0.5 < calibrate(1.0, 1.0) < 1.0


def test_off_topic_question_is_handed_over(curated: Retriever) -> None:
    result = curated.search(text="猕猴桃今年卖多少钱一斤", crop="猕猴桃", pest=None, category=None)
    assert decide(result).kind == "none"


def test_half_sure_asks_between_two_problems() -> None:
    cards = [
        card_from_dict(card(id="spot", topic="褐斑病", symptoms="叶子上有褐色斑点，边缘深褐")),
        card_from_dict(card(id="rot", topic="软腐病", symptoms="果实烂软，果肉发酸")),
    ]
    result = Retriever(cards).search(
        text="猕猴桃叶子有斑点，果实也烂", crop="猕猴桃", pest=None, category=None
    )
    decision = decide(result, answer_at=0.99, clarify_at=0.0)
    assert decision.kind == "clarify" and {c.id for c in decision.cards} == {"spot", "rot"}
    text = render_clarify(decision.cards)
    assert "回复1：" in text and "回复2：" in text and "褐斑病" in text and "软腐病" in text


def test_details_list_every_measure_in_order() -> None:
    text = render_details(card_from_dict(card()))
    assert text.index("农业：清扫落叶") < text.index("药剂：发病初期")
    assert "回复1有用，2没解决" in text and "回复3" not in text


def test_a_mushroom_log_is_not_maize() -> None:
    names = load_names(REPO / "kb")
    assert names.find_crop("香菇棒子发软流黄水") == "食用菌"
    assert names.find_crop("棒子叶子上有长条斑") == "玉米"
