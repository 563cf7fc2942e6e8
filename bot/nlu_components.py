"""Ketepai's own Rasa NLU components: names found by longest match, intents by a linear model over
character n-grams in which every known name stands as its kind.

Why (docs/nlu.md, "Pipeline, chosen by measurement"): on ~1,000-2,000 short farmer messages
DIET did not beat a linear model over character n-grams, and what decides the category is often
the kind of thing named (a pest, a disease, a pesticide, an animal) rather than the name itself:
「用啥药」 after a pest's name is ask_pest, after a pesticide's name ask_pesticide_use.
Replacing each name by its kind lets the model carry what it learnt from one pest to every other
pest, including names that no training example contains. Both components are cheap (about a
millisecond per message; DIET cost several) and train in seconds.

Every name comes from the training data's lookup tables and synonyms, which `ketepai nlu names`
generates from kb/names.yml, plus the hand-kept cue lists in nlu_data/lookups/cues.yml. So a model
carries its own tables: editing names.yml changes nothing until the next training.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import (
    ENTITIES,
    ENTITY_ATTRIBUTE_END,
    ENTITY_ATTRIBUTE_START,
    ENTITY_ATTRIBUTE_TYPE,
    ENTITY_ATTRIBUTE_VALUE,
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

log = logging.getLogger(__name__)

CROP, PEST = "crop", "pest_disease"
# Lookup tables in nlu_data/lookups/cues.yml: kinds of names that are no entity of the contract.
CUE_TABLES = ("cue_animal", "cue_pesticide", "cue_fertilizer")
# What each kind of name becomes in the classifier's text: one private-use character each.
KIND_MARK = {
    "crop": "\ue001",
    "animal": "\ue002",
    "pest": "\ue003",
    "disease": "\ue004",
    "pesticide": "\ue005",
    "fertilizer": "\ue006",
}
# A pest_disease name is a disease (or disorder) when its canonical name ends like one
# (稻瘟病, 猪瘟, 新城疫, 羊痘, 鸡白痢, 禽流感, 瘤胃臌气); else a pest (斑潜蝇, 白粉虱 and
# 根结线虫 are pests).
_DISEASE = re.compile(r"(病|瘟|疫|痘|痢|流感|臌气)$")


class NameTable:
    """Every known form of a name → (entity or cue kind, canonical value), longest first."""

    def __init__(self, forms: dict[str, tuple[str, str, str]]) -> None:
        # form → (entity type or "" for a cue, canonical value, kind mark)
        self.forms = forms
        self._by_first: dict[str, list[str]] = {}
        for form in sorted(forms, key=len, reverse=True):
            self._by_first.setdefault(form[0], []).append(form)

    @classmethod
    def from_training_data(cls, data: TrainingData) -> NameTable:
        """The tables and synonyms of `data` (nlu_data/lookups/*.yml)."""
        tables = {t["name"]: [str(e) for e in t.get("elements", [])] for t in data.lookup_tables}
        synonyms = {str(k): str(v) for k, v in data.entity_synonyms.items()}
        animals = set(tables.get("cue_animal", []))
        forms: dict[str, tuple[str, str, str]] = {}
        # Cues first: an entity's own table wins where a form is in both.
        for kind in ("pesticide", "fertilizer"):
            for form in tables.get(f"cue_{kind}", []):
                forms[form] = ("", form, KIND_MARK[kind])
        for form in tables.get(CROP, []):
            canonical = synonyms.get(form, form)
            kind = "animal" if canonical in animals or form in animals else "crop"
            forms[form] = (CROP, canonical, KIND_MARK[kind])
        for form in tables.get(PEST, []):
            canonical = synonyms.get(form, form)
            kind = "disease" if _DISEASE.search(canonical) else "pest"
            if canonical in animals:  # an animal disease listed as a cue
                kind = "animal"
            forms[form] = (PEST, canonical, KIND_MARK[kind])
        for form in animals - set(forms):
            forms[form] = ("", form, KIND_MARK["animal"])
        return cls(forms)

    def matches(self, text: str) -> Iterable[tuple[int, int, str]]:
        """(start, end, form) of each name in `text`, longest first, left to right."""
        i, n = 0, len(text)
        while i < n:
            hit = next((f for f in self._by_first.get(text[i], ()) if text.startswith(f, i)), None)
            if hit is None:
                i += 1
                continue
            yield i, i + len(hit), hit
            i += len(hit)

    def marked(self, text: str) -> str:
        """`text` with every name replaced by its kind's mark."""
        out: list[str] = []
        last = 0
        for start, end, form in self.matches(text):
            out.append(text[last:start])
            out.append(self.forms[form][2])
            last = end
        out.append(text[last:])
        return "".join(out)


def _tokens_bounds(message: Message) -> tuple[set[int], set[int]] | None:
    tokens = message.get("text_tokens")
    if not tokens:
        return None
    return {t.start for t in tokens}, {t.end for t in tokens}


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=True)
class NameEntityExtractor(GraphComponent, EntityExtractorMixin):
    """`crop` and `pest_disease` by longest match against the lookup tables; the value is the
    canonical name (奇异果 → 猕猴桃).

    With `token_boundaries` (default), a match must start and end where the tokenizer cut the text,
    so that 「野猪」 (one jieba word) is no 猪 and 「茶翅蝽」 no 茶.
    """

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """Options of this component and their defaults."""
        return {"token_boundaries": True}

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        table: NameTable | None = None,
    ) -> None:
        self._config = config
        self._storage = model_storage
        self._resource = resource
        self.table = table or NameTable({})

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> NameEntityExtractor:
        """A new, untrained extractor."""
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        """Take the name tables from the training data and keep them in the model."""
        self.table = NameTable.from_training_data(training_data)
        with self._storage.write_to(self._resource) as path:
            (path / "names.pkl").write_bytes(pickle.dumps(self.table.forms))
        return self._resource

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> NameEntityExtractor:
        """The extractor with the tables it was trained with."""
        try:
            with model_storage.read_from(resource) as path:
                forms = pickle.loads((path / "names.pkl").read_bytes())  # noqa: S301 (our model)
        except (ValueError, FileNotFoundError):
            log.warning("NameEntityExtractor: no trained tables, finds nothing")
            forms = {}
        return cls(config, model_storage, resource, NameTable(forms))

    def process(self, messages: list[Message]) -> list[Message]:
        """Add the names found in each message to its entities."""
        for message in messages:
            found = self.extract(message)
            if found:
                entities = [*message.get(ENTITIES, []), *self.add_extractor_name(found)]
                message.set(ENTITIES, entities, add_to_output=True)
        return messages

    def extract(self, message: Message) -> list[dict[str, Any]]:
        """The names in one message, as Rasa entities."""
        text = message.get(TEXT)
        if not text:
            return []
        bounds = _tokens_bounds(message) if self._config.get("token_boundaries", True) else None
        found = []
        for start, end, form in self.table.matches(text):
            entity, canonical, _ = self.table.forms[form]
            if not entity:
                continue
            if bounds is not None and (start not in bounds[0] or end not in bounds[1]):
                continue
            found.append(
                {
                    ENTITY_ATTRIBUTE_TYPE: entity,
                    ENTITY_ATTRIBUTE_START: start,
                    ENTITY_ATTRIBUTE_END: end,
                    ENTITY_ATTRIBUTE_VALUE: canonical,
                    PREDICTED_CONFIDENCE_KEY: 1.0,
                }
            )
        return found


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class MarkedNgramIntentClassifier(GraphComponent, IntentClassifier):
    """Logistic regression over TF-IDF character 1–3-grams of the message, each known name
    replaced by a mark for its kind (crop, animal, pest, disease, pesticide, fertilizer)."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """Options of this component and their defaults."""
        return {"C": 30.0, "max_ngram": 2, "ranking_length": 10, "random_seed": 42}

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        model: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._storage = model_storage
        self._resource = resource
        self._model = model  # {"table": forms, "vectorizer": ..., "classifier": ...}
        self._table = NameTable(model["table"]) if model else None

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> MarkedNgramIntentClassifier:
        """A new, untrained classifier."""
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        """Fit on every example that has an intent."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        examples = [m for m in training_data.intent_examples if m.get(TEXT) and m.get(INTENT)]
        table = NameTable.from_training_data(training_data)
        labels = sorted({str(m.get(INTENT)) for m in examples})
        if len(labels) < 2:
            log.warning("MarkedNgramIntentClassifier: fewer than two intents, not trained")
            return self._resource
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, int(self._config["max_ngram"])), sublinear_tf=True
        )
        x = vectorizer.fit_transform([table.marked(m.get(TEXT)) for m in examples])
        classifier = LogisticRegression(
            C=float(self._config["C"]),
            max_iter=3000,
            random_state=self._config.get("random_seed"),
        )
        classifier.fit(x, [str(m.get(INTENT)) for m in examples])
        self._model = {"table": table.forms, "vectorizer": vectorizer, "classifier": classifier}
        self._table = table
        with self._storage.write_to(self._resource) as path:
            (path / "intent.pkl").write_bytes(pickle.dumps(self._model))
        return self._resource

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> MarkedNgramIntentClassifier:
        """The trained classifier (an untrained one predicts nothing)."""
        try:
            with model_storage.read_from(resource) as path:
                model = pickle.loads((path / "intent.pkl").read_bytes())  # noqa: S301 (our model)
        except (ValueError, FileNotFoundError):
            log.warning("MarkedNgramIntentClassifier: not trained, predicts nothing")
            model = None
        return cls(config, model_storage, resource, model)

    def process(self, messages: list[Message]) -> list[Message]:
        """Set `intent` and `intent_ranking` on each message with text."""
        todo = [m for m in messages if m.get(TEXT)]
        if self._model is None or self._table is None or not todo:
            return messages
        x = self._model["vectorizer"].transform([self._table.marked(m.get(TEXT)) for m in todo])
        probabilities = self._model["classifier"].predict_proba(x)
        names = self._model["classifier"].classes_
        length = int(self._config.get("ranking_length") or len(names))
        for message, row in zip(todo, probabilities, strict=True):
            order = row.argsort()[::-1][:length]
            ranking = [
                {INTENT_NAME_KEY: str(names[i]), PREDICTED_CONFIDENCE_KEY: float(row[i])}
                for i in order
            ]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages
