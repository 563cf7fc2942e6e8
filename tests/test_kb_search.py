"""Retrieval: the right card, crop filters, drafts never answered, calibrated decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.kb_answer import decide, render_clarify, render_details, render_summary
from bot.kb_search import (
    CAL_FEATURES,
    CALIBRATION,
    Result,
    Retriever,
    calibrate,
    grams,
    query_terms,
)
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
    rest = [0.0, 1.0, 0.3, 0.0, 0.0, 0.0, 0.3]  # category, named, cover, oov, no crop, pest, body

    def conf(p: float, margin: float) -> float:
        return calibrate([p, margin, *rest])

    assert conf(0.9, 0.5) > conf(0.6, 0.5) > conf(0.6, 0.0)
    assert 0.0 < conf(0.0, 0.0) < 0.5 < conf(1.0, 1.0) < 1.0
    assert len(CAL_FEATURES) == len(rest) + 2 == len(CALIBRATION) - 1


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
    many = card_from_dict(card(id="bird", crop=["猕猴桃", "梨"], topic="鸟害"))
    assert "您的猕猴桃" in render_clarify((many, decision.cards[0]), "猕猴桃")


def test_details_list_every_measure_in_order() -> None:
    text = render_details(card_from_dict(card()))
    assert text.index("农业：清扫落叶") < text.index("药剂：发病初期")
    assert "回复1有用，2没解决" in text and "回复3" not in text


def test_a_mushroom_log_is_not_maize() -> None:
    names = load_names(REPO / "kb")
    assert names.find_crop("香菇棒子发软流黄水") == "食用菌"
    assert names.find_crop("棒子叶子上有长条斑") == "玉米"


def test_birds_pecking_kiwifruit_get_the_bird_card_not_a_storage_or_thinning_pair(
    curated: Retriever,
) -> None:
    # Was: a clarifying question offering 冷库烂果 / 疏果, both only sharing 「果子」.
    for text, category in (
        ("鸟把猕猴桃果子啄烂了咋办", None),
        ("猕猴桃快熟了果子被鸟啄了", "pest"),
    ):
        d = decide(curated.search(text=text, crop="猕猴桃", pest=None, category=category))
        offered = {c.id for c in d.cards}
        assert not offered & {"kiwi-cold-storage-rot", "kiwi-fruit-thinning"}, (text, offered)
    d = decide(
        curated.search(text="猕猴桃快熟了果子被鸟啄了", crop="猕猴桃", pest=None, category="pest")
    )
    assert d.kind == "answer" and d.cards[0].id == "fruit-bird-damage"


def test_generic_part_words_never_name_a_card() -> None:
    cards = [
        card_from_dict(card(id="thin", category="cultivation", topic="疏果", aliases=["果子小"],
                            summary="挂果太多果小。", symptoms="果实偏小")),
        card_from_dict(card(id="rot", category="storage", topic="冷库烂果",
                            aliases=["果子放软了"], summary="冷库里果实变软腐烂。")),
    ]  # fmt: skip
    r = Retriever(cards)
    pool = r.pool(text="果子被鸟啄了", crop="猕猴桃", pest=None, category=None)
    assert pool is not None and not pool.name.any()  # 「果子」 alone names neither card
    pool = r.pool(text="果子小", crop="猕猴桃", pest=None, category=None)
    assert pool is not None and r.cards[int(pool.idx[0])].id == "thin" and pool.name[0] == 1.0


def test_crop_names_come_out_of_card_names_as_out_of_questions(curated: Retriever) -> None:
    # 「萝卜空心」 (an alias of the general 缺硼 card) is fully named by a 萝卜 question.
    pool = curated.pool(text="萝卜切开里面空心了", crop="萝卜", pest=None, category="disease")
    assert pool is not None
    ids = [curated.cards[int(i)].id for i in pool.idx]
    assert "soil-boron-deficiency" in ids
    assert pool.name[ids.index("soil-boron-deficiency")] == pytest.approx(1.0)


def test_a_runner_up_without_evidence_is_not_offered() -> None:
    from bot.kb_answer import RUNNER_UP_SHARE
    from bot.kb_search import Candidate

    a = card_from_dict(card(id="a"))
    b = card_from_dict(card(id="b", topic="软腐病"))
    weak = Result((Candidate(a, 1, 1, 0.5, 0.6), Candidate(b, 0.3, 0.0, 0.0, 0.3)), 0.5)
    assert decide(weak).kind == "none"
    faint = Candidate(b, 0.3, 0.5, 0.2, 0.6 * RUNNER_UP_SHARE / 2)
    assert decide(Result((Candidate(a, 1, 1, 0.5, 0.6), faint), 0.5)).kind == "none"
    fair = Result((Candidate(a, 1, 1, 0.5, 0.6), Candidate(b, 0.8, 0.5, 0.2, 0.3)), 0.5)
    assert decide(fair).kind == "clarify"


def test_a_confident_calibration_alone_does_not_answer() -> None:
    from bot.kb_answer import ANSWER_MIN_P
    from bot.kb_search import Candidate

    a = card_from_dict(card(id="a"))
    low = Result((Candidate(a, 1, 1, 0.5, ANSWER_MIN_P / 2),), 0.99)
    assert decide(low).kind != "answer"
    assert decide(Result((Candidate(a, 1, 1, 0.5, 0.9),), 0.99)).kind == "answer"
