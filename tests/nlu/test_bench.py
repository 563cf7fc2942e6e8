"""The NLU benchmark's own arithmetic: entity F1, folds, the baseline's name matcher."""

from __future__ import annotations

import pytest

from bench.nlu_common import Example, parse_annotated, to_rasa_yaml
from bench.nlu_report import (
    Baseline,
    Prediction,
    entity_prf,
    folds,
    intent_metrics,
    score,
    to_prediction,
)


def ex(raw: str, intent: str) -> Example:
    text, entities = parse_annotated(raw)
    return Example(text, intent, entities, raw)


def test_entity_prf_counts_pairs_and_needs_canonical_values() -> None:
    r = entity_prf([["猕猴桃"], [], ["水稻"]], [["猕猴桃"], ["核桃"], ["稻子"]])
    # tp 1 (猕猴桃); fp 核桃 and the unmapped alias 稻子; fn 水稻
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(0.4)


def test_intent_metrics_macro_f1() -> None:
    m = intent_metrics(["a", "a", "b", "b"], ["a", "a", "a", "b"])
    assert m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_gold_aliases_are_scored_by_their_canonical_name() -> None:
    examples = [ex("[奇异果](crop)烂了", "ask_storage")]
    preds = [Prediction("ask_storage", "ask_storage", ["猕猴桃"], [])]
    assert score(examples, preds)["crop"]["f1"] == 1.0


def test_folds_are_stratified_and_repeatable() -> None:
    examples = [ex(f"问题{i}", "ask_pest" if i % 2 else "greet") for i in range(20)]
    a, b = folds(examples, 5, 42), folds(examples, 5, 42)
    assert a == b
    for _, test in a:
        assert sorted(examples[i].intent for i in test) == ["ask_pest"] * 2 + ["greet"] * 2


def test_to_prediction_keeps_the_best_real_intent_under_a_fallback() -> None:
    p = to_prediction(
        {
            "intent": {"name": "nlu_fallback", "confidence": 0.4},
            "intent_ranking": [{"name": "nlu_fallback"}, {"name": "ask_pest"}],
            "entities": [{"entity": "crop", "value": "白菜"}],
        }
    )
    assert (p.intent, p.intent_no_fallback, p.crops) == ("nlu_fallback", "ask_pest", ["白菜"])


def test_baseline_learns_and_finds_names_longest_first() -> None:
    train = [ex("虫子好多", "ask_pest"), ex("你好啊", "greet")] * 3
    model = Baseline().fit(train)
    [p] = model.predict(["猕猴桃树上虫子好多"])
    assert p.intent == "ask_pest"
    assert p.crops == ["猕猴桃"]  # 「猕猴桃树」 is one alias, not 猕猴桃 + something


def test_rasa_yaml_round_trip_keeps_annotations() -> None:
    text = to_rasa_yaml([ex("[洋芋](crop)烂了", "ask_storage")])
    assert "- [洋芋](crop)烂了" in text and "- intent: ask_storage" in text


def test_a_quick_run_says_so_in_the_report() -> None:
    from bench.nlu_report import render

    r = {
        "intent": {"accuracy": 0.5, "macro_f1": 0.5},
        "intent_with_fallback": {"accuracy": 0.5},
        "fallback_rate": 0.0,
        "crop": {"f1": 1.0},
        "pest_disease": {"f1": 1.0},
    }
    report = {"generated": "t", "n_train": 10, "n_heldout": 2, "k": 5, "seed": 42, "cv": {}}
    report |= {"chosen": "config.yml", "baseline_cv": r, "baseline_heldout": r}
    assert "quick run" not in render({**report, "folds_used": 5})
    text = render({**report, "folds_used": 1, "n_cv_scored": 2, "load_start": (1.0, 2.0, 3.0)})
    assert "only the first 1 of the 5 folds" in text and "1.0 / 2.0 / 3.0" in text
