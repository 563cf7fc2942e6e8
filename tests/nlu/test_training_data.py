"""The NLU training data: balanced, farmer-like, consistent with kb/names.yml, disjoint from the
held-out set, and segmented by jieba so that entity boundaries fall on token boundaries."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import jieba
import pytest
import yaml

from bench.nlu_common import (
    CONSULT_INTENTS,
    HELDOUT_FILE,
    REPO,
    TRAIN_FILES,
    Example,
    load_examples,
)
from bot.knowledge import GENERAL, Card, load_cards, load_names

DOMAIN = yaml.safe_load((REPO / "domain.yml").read_text(encoding="utf-8"))
NAMES = load_names()
CROP_FORMS = {f: c for c, al in NAMES.crops.items() if c != GENERAL for f in (c, *al)}
PEST_FORMS = {f: c for c, al in NAMES.pests.items() for f in (c, *al)}
# Card filing labels that are not things farmers grow.
FILING_LABELS = {GENERAL, "蔬菜"}


@pytest.fixture(scope="module")
def train() -> list[Example]:
    return load_examples(TRAIN_FILES)


@pytest.fixture(scope="module")
def heldout() -> list[Example]:
    return load_examples([HELDOUT_FILE])


@pytest.fixture(scope="module")
def tokenizer() -> jieba.Tokenizer:
    tok = jieba.Tokenizer()
    for path in sorted((REPO / "nlu_data" / "jieba").glob("*")):
        tok.load_userdict(str(path))
    return tok


def test_intents_and_entities_are_the_contracts() -> None:
    contract = {*CONSULT_INTENTS, "request_human", "greet", "goodbye", "thank", "affirm"}
    contract |= {"deny", "inform", "rate_service", "out_of_scope"}
    assert contract <= set(DOMAIN["intents"])
    assert {"crop", "pest_disease"} <= set(DOMAIN["entities"])


def test_every_domain_intent_has_examples_and_consultations_are_balanced(
    train: list[Example],
) -> None:
    counts = Counter(ex.intent for ex in train)
    assert set(DOMAIN["intents"]) == set(counts), "intents without examples or not in domain"
    consult = [counts[i] for i in CONSULT_INTENTS]
    assert min(consult) >= 60, counts
    assert max(consult) <= 1.3 * min(consult), f"consultation intents unbalanced: {counts}"


def test_no_duplicates_and_no_heldout_leak(train: list[Example], heldout: list[Example]) -> None:
    texts = [_norm(ex.text) for ex in train]
    dupes = [t for t, n in Counter(texts).items() if n > 1]
    assert not dupes
    leaked = set(texts) & {_norm(ex.text) for ex in heldout}
    assert not leaked, f"held-out messages in the training data: {sorted(leaked)}"


def test_no_template_crossed_with_a_crop_list(train: list[Example]) -> None:
    # Blank out every name: many examples collapsing to one skeleton means a template was filled
    # from a list, which teaches the model the template instead of farmers' language.
    skeletons = Counter(_skeleton(ex.text) for ex in train if ex.entities)
    # A bare name (「猕猴桃」 answering 「什么作物？」) is no template.
    repeated = {s: n for s, n in skeletons.items() if n > 2 and len(s.replace("#", "")) > 2}
    assert not repeated, repeated


def test_heldout_has_enough_farmer_messages(heldout: list[Example]) -> None:
    assert len(heldout) >= 150
    assert {ex.intent for ex in heldout} == set(DOMAIN["intents"]) - _injected_only()


def test_entity_values_are_known_names(train: list[Example]) -> None:
    unknown = [
        (ex.raw, e.surface)
        for ex in train
        for e in ex.entities
        if (e.entity == "crop" and e.surface not in CROP_FORMS)
        or (e.entity == "pest_disease" and e.surface not in PEST_FORMS)
    ]
    assert not unknown, "add the name (or alias) to kb/names.yml and run `make names`"


def test_entities_fall_on_jieba_token_boundaries(
    train: list[Example], tokenizer: jieba.Tokenizer
) -> None:
    misaligned = []
    for ex in train:
        bounds = {0}
        pos = 0
        for token in tokenizer.cut(ex.text):
            pos += len(token)
            bounds.add(pos)
        misaligned += [(ex.raw, e.surface) for e in ex.entities if not {e.start, e.end} <= bounds]
    assert not misaligned


def test_names_are_annotated_wherever_jieba_cuts_them_out(
    train: list[Example], tokenizer: jieba.Tokenizer
) -> None:
    # An unannotated 「猪」 in one example and an annotated one in another teach DIET both ways.
    missed = []
    for ex in train:
        spans = {(e.start, e.end) for e in ex.entities}
        pos = 0
        for token in tokenizer.cut(ex.text):
            span = (pos, pos + len(token))
            pos += len(token)
            if (token in CROP_FORMS or token in PEST_FORMS) and span not in spans:
                missed.append((ex.raw, token))
    assert not missed


def test_every_crop_and_problem_in_the_knowledge_base_is_in_the_training_data(
    train: list[Example],
) -> None:
    text = "\n".join(ex.text for ex in train)
    cards = [c for c in load_cards() if c.status == "published"]
    crops = {crop for c in cards for crop in c.crops} - FILING_LABELS
    missing_crops = sorted(
        c for c in crops if not any(f in text for f in (c, *NAMES.crops.get(c, ())))
    )
    assert not missing_crops
    # Crops must all appear; a problem is covered when an example of the card's category shares a
    # two-character word with the card's topic or aliases (cards keep being added: the test says
    # which ones need examples).
    missing_topics = sorted(
        f"{c.crop}:{c.topic}" for c in cards if not any(_covers(ex, c) for ex in train)
    )
    assert not missing_topics


def _covers(ex: Example, card: Card) -> bool:
    """Whether `ex`, of the card's category, shares a two-character word with its problem."""
    if ex.intent != f"ask_{card.category}":
        return False
    words = {card.topic, *card.aliases, *NAMES.pests.get(card.topic, ())}
    grams = {w[i : i + 2] for w in words for i in range(len(w) - 1)}
    return any(g in ex.text for g in grams if not any(g in f for f in CROP_FORMS))


def _injected_only() -> set[str]:
    # Intents that the gateway sends as `/intent{...}` (photos, locations) need no held-out text.
    return set()


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _skeleton(text: str) -> str:
    for form in sorted({*CROP_FORMS, *PEST_FORMS}, key=len, reverse=True):
        text = text.replace(form, "#")
    return _norm(text)


def test_helpers_parse_annotations() -> None:
    from bench.nlu_common import parse_annotated

    text, ents = parse_annotated("[弥猴桃](crop)树干上流红水 是[溃疡病](pest_disease)吗")
    assert text == "弥猴桃树干上流红水 是溃疡病吗"
    assert [(e.start, e.end, e.entity) for e in ents] == [(0, 3, "crop"), (11, 14, "pest_disease")]
    assert Path(TRAIN_FILES[0]).suffix == ".yml"


# The labelling rule (docs/nlu.md, "Labelling rule") in the checks a machine can make. Training
# data and held-out set alike: a label that breaks the rule fails here with the message.
NAMED_PROBLEM_INTENTS = {"ask_pest", "ask_disease", "ask_livestock", "ask_storage"}


def test_a_named_pest_or_disease_decides_the_category(
    train: list[Example], heldout: list[Example]
) -> None:
    # Rule 4: a named pest or disease is ask_pest/ask_disease even when the farmer asks which drug
    # or fertilizer (only animals and stored produce come first); a fragment naming one is no
    # `inform`.
    wrong = [
        (ex.intent, ex.raw)
        for ex in [*train, *heldout]
        if ex.values("pest_disease") and ex.intent not in NAMED_PROBLEM_INTENTS
    ]
    assert not wrong


def test_giving_up_is_stop(train: list[Example], heldout: list[Example]) -> None:
    # 算了/算啦 abandon the question or the form: stop, never deny or goodbye.
    wrong = [
        (ex.intent, ex.raw)
        for ex in [*train, *heldout]
        if re.search("算了|算啦|取消", ex.text) and ex.intent != "stop"
    ]
    assert not wrong
