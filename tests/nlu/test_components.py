"""bot/nlu_components.py: names by longest match, intents over marked character n-grams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.shared.nlu.training_data.loading import load_data
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu_components import (
    KIND_MARK,
    MarkedNgramIntentClassifier,
    NameEntityExtractor,
    NameTable,
)
from bot.nlu_names import cue_words, cues_yaml

REPO = Path(__file__).resolve().parents[2]
LOOKUPS = REPO / "nlu_data" / "lookups"


@pytest.fixture(scope="module")
def tables() -> TrainingData:
    return load_data(str(LOOKUPS))


@pytest.fixture()
def storage(tmp_path: Path) -> LocalModelStorage:
    (tmp_path / "model").mkdir()
    return LocalModelStorage(tmp_path / "model")


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


def _tokenizer(tmp_path: Path) -> JiebaTokenizer:
    config = JiebaTokenizer.get_default_config()
    config["dictionary_path"] = str(REPO / "nlu_data" / "jieba")
    (tmp_path / "tok").mkdir()
    storage = LocalModelStorage(tmp_path / "tok")
    return JiebaTokenizer.create(config, storage, Resource("tok"), _context())


def test_generated_cue_file_is_up_to_date() -> None:
    assert (LOOKUPS / "cues.yml").read_text(encoding="utf-8") == cues_yaml(), "run `make names`"
    cues = cue_words()
    assert "吡虫啉" in cues["pesticide"] and "百草枯" in cues["pesticide"]  # banned list merged
    assert "尿素" in cues["fertilizer"] and "生猪" in cues["animal"]


def test_names_become_their_kind(tables: TrainingData) -> None:
    table = NameTable.from_training_data(tables)
    assert table.forms["奇异果"][:2] == ("crop", "猕猴桃")
    assert table.forms["吊丝虫"][:2] == ("pest_disease", "小菜蛾")
    marked = table.marked("奇异果上吊丝虫多 打吡虫啉行不 鸡粪能用不")
    assert marked == (
        f"{KIND_MARK['crop']}上{KIND_MARK['pest']}多 打{KIND_MARK['pesticide']}行不 "
        f"{KIND_MARK['fertilizer']}能用不"
    )  # 鸡粪 is manure (the longer match), not a chicken
    assert table.marked("猪瘟 霜霉病") == f"{KIND_MARK['animal']} {KIND_MARK['disease']}"
    assert table.marked("猪崽拉稀").startswith(KIND_MARK["animal"])


def test_entities_are_canonical_and_on_token_boundaries(
    tables: TrainingData, storage: LocalModelStorage, tmp_path: Path
) -> None:
    extractor = NameEntityExtractor.create(
        NameEntityExtractor.get_default_config(), storage, Resource("names"), _context()
    )
    extractor.train(tables)
    loaded = NameEntityExtractor.load(
        NameEntityExtractor.get_default_config(), storage, Resource("names"), _context()
    )
    tokenizer = _tokenizer(tmp_path)
    messages = [Message.build(t) for t in ("奇异果叶子上有褐斑病", "鸡腿肿了", "种了三亩洋芋")]
    tokenizer.process(messages)
    loaded.process(messages)
    found = [
        [(e["entity"], e["value"], e["start"], e["end"]) for e in m.get("entities", [])]
        for m in messages
    ]
    assert found[0] == [("crop", "猕猴桃", 0, 3), ("pest_disease", "褐斑病", 7, 10)]
    assert found[1] == []  # jieba keeps 鸡腿 whole: no 鸡 inside it
    assert found[2] == [("crop", "马铃薯", 4, 6)]
    assert {e["extractor"] for m in messages for e in m.get("entities", [])} == {
        "NameEntityExtractor"
    }


def _examples(rows: list[tuple[str, str]], tables: TrainingData) -> TrainingData:
    data = TrainingData([Message.build(text, intent) for text, intent in rows])
    data.lookup_tables = tables.lookup_tables
    data.entity_synonyms = tables.entity_synonyms
    return data


def _intent(classifier: MarkedNgramIntentClassifier, text: str) -> dict[str, Any]:
    message = Message.build(text)
    classifier.process([message])
    return message.get("intent")


def test_what_is_learnt_about_one_name_carries_to_others_of_its_kind(
    tables: TrainingData, storage: LocalModelStorage
) -> None:
    rows = [
        ("蚜虫多 用啥药", "ask_pest"),
        ("蚜虫咋治", "ask_pest"),
        ("地里蚜虫好多", "ask_pest"),
        ("吡虫啉兑多少水", "ask_pesticide_use"),
        ("吡虫啉咋用", "ask_pesticide_use"),
        ("吡虫啉能和别的混不", "ask_pesticide_use"),
        ("尿素施多少", "ask_fertilizer"),
        ("尿素咋施", "ask_fertilizer"),
        ("你好", "greet"),
        ("在吗", "greet"),
    ]
    config = MarkedNgramIntentClassifier.get_default_config()
    classifier = MarkedNgramIntentClassifier.create(config, storage, Resource("intent"), _context())
    classifier.train(_examples(rows, tables))
    loaded = MarkedNgramIntentClassifier.load(config, storage, Resource("intent"), _context())
    # Names no example contains: a mite, a miticide, a potash fertilizer.
    assert _intent(loaded, "红蜘蛛咋治")["name"] == "ask_pest"
    assert _intent(loaded, "哒螨灵兑多少水")["name"] == "ask_pesticide_use"
    assert _intent(loaded, "硫酸钾施多少")["name"] == "ask_fertilizer"
    message = Message.build("你好")
    loaded.process([message])
    ranking = message.get("intent_ranking")
    assert ranking[0]["name"] == "greet" and len(ranking) == 4
    assert abs(sum(r["confidence"] for r in ranking) - 1.0) < 1e-6


def test_an_untrained_classifier_predicts_nothing(storage: LocalModelStorage) -> None:
    config = MarkedNgramIntentClassifier.get_default_config()
    classifier = MarkedNgramIntentClassifier.load(config, storage, Resource("none"), _context())
    message = Message.build("你好")
    classifier.process([message])
    assert message.get("intent") is None
