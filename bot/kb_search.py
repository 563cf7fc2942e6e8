"""Finding the card for a question: filters, Chinese text similarity, a calibrated confidence.

Terms are jieba words (from the user dictionary of crop and pest names) and character bigrams and
skip-bigrams, so 「褐色斑点」 meets 「褐斑病」 without a word cut. Cards are scored with BM25 on
their text and with how much of a card's problem name the question contains, in sparse
matrices, so a question costs a few milliseconds with tens of thousands of cards.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jieba
import numpy as np
from scipy import sparse

from bot.knowledge import GENERAL, STOP_PHRASES, Card, Names

USERDICT = Path(__file__).resolve().parents[1] / "nlu_data" / "jieba" / "userdict.txt"
K1, B = 1.2, 0.75
# Weights of the raw score; see `Retriever.search`. Tuned on tests/kb/dev_questions.yml only.
W_NAME, W_BODY, W_PEST, W_CATEGORY, W_CROP, W_CURATED = 0.45, 0.35, 0.5, 0.15, 0.1, 0.05
# Logistic calibration of the raw score and the margin to the runner-up into P(top card is right),
# fitted by `bench/kb_calibrate.py` on the dev set (not on the benchmark question set).
CALIBRATION = (-2.38, 4.94, 5.51)  # intercept, raw score, margin


@lru_cache(maxsize=1)
def _jieba() -> jieba.Tokenizer:
    tok = jieba.Tokenizer()
    logging.getLogger("jieba").setLevel(logging.WARNING)
    if USERDICT.is_file():
        tok.load_userdict(str(USERDICT))
    return tok


def clean(text: str) -> str:
    """The text with question words taken out."""
    for phrase in STOP_PHRASES:
        text = text.replace(phrase, " ")
    return text


def grams(text: str) -> list[str]:
    """Character bigrams and skip-bigrams of the letters and digits of `text` (with repeats)."""
    out: list[str] = []
    for run in re.findall(r"[^\W_]+", text):
        out.extend(a + b for a, b in itertools.pairwise(run))
        out.extend(a + b for a, b in zip(run, run[2:], strict=False))
    return out


def words(text: str) -> list[str]:
    """jieba words of two characters or more, marked so they never collide with bigrams."""
    return ["w:" + w for w in _jieba().lcut(text, HMM=False) if len(w) >= 2 and w.strip()]


def query_terms(text: str) -> list[str]:
    """The terms of a question (each once)."""
    text = clean(text)
    return list(dict.fromkeys(grams(text) + words(text)))


@dataclass(frozen=True)
class Candidate:
    """A card found for a question, its raw score and what the score was made of."""

    card: Card
    raw: float
    name: float
    body: float


@dataclass(frozen=True)
class Result:
    """The ranked candidates and the calibrated confidence that the first one is right."""

    candidates: tuple[Candidate, ...]
    confidence: float

    @property
    def best(self) -> Candidate | None:
        """The top candidate, if any."""
        return self.candidates[0] if self.candidates else None


def calibrate(raw: float, margin: float) -> float:
    """P(the top card is right) from its raw score and its margin over the runner-up."""
    b0, b1, b2 = CALIBRATION
    return 1.0 / (1.0 + math.exp(-(b0 + b1 * raw + b2 * margin)))


class Retriever:
    """Published cards in sparse term matrices, built once per set of cards."""

    def __init__(self, cards: list[Card], names: Names | None = None) -> None:
        self.cards = [c for c in cards if c.status == "published"]
        self.names = names
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[int] = []
        lengths = []
        form_rows, form_cols, form_card = [], [], []
        n_forms = 0
        for i, card in enumerate(self.cards):
            forms = [f for f in dict.fromkeys((card.topic, *card.aliases)) if f]
            name_terms = [t for f in forms for t in grams(f) + words(f)]
            body = grams(card.searchable_text()) + name_terms
            counts: dict[int, int] = {}
            for t in body:
                j = vocab.setdefault(t, len(vocab))
                counts[j] = counts.get(j, 0) + 1
            rows.extend([i] * len(counts))
            cols.extend(counts)
            vals.extend(counts.values())
            lengths.append(len(body))
            for form in forms:
                for t in set(grams(form) + words(form)):
                    form_rows.append(n_forms)
                    form_cols.append(vocab.setdefault(t, len(vocab)))
                form_card.append(i)
                n_forms += 1
        n, m = max(1, len(self.cards)), max(1, len(vocab))
        self.vocab = vocab
        tf = sparse.csr_matrix((vals, (rows, cols)), shape=(n, m), dtype=np.float32)
        df = np.bincount(tf.indices, minlength=m).astype(np.float32)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        dl = np.asarray(lengths or [1], dtype=np.float32)
        norm = K1 * (1 - B + B * dl / max(1.0, float(dl.mean())))
        tf = tf.tocoo()
        bm = tf.data * (K1 + 1) / (tf.data + norm[tf.row]) * self.idf[tf.col]
        self.body = sparse.csc_matrix((bm, (tf.row, tf.col)), shape=(n, m))
        # Each name form's terms weighted by idf, rows summing to 1: the share of it a query holds.
        fw = self.idf[np.asarray(form_cols, dtype=np.int64)] if form_cols else np.zeros(0)
        forms = sparse.csr_matrix(
            (fw, (form_rows, form_cols)), shape=(max(1, n_forms), m), dtype=np.float32
        )
        totals = np.asarray(forms.sum(axis=1)).ravel()
        totals[totals == 0] = 1.0
        self.forms = sparse.csc_matrix(sparse.diags(1.0 / totals) @ forms)
        self.form_card = np.asarray(form_card or [0], dtype=np.int64)
        self.by_crop: dict[str, list[int]] = {}
        for i, c in enumerate(self.cards):
            for crop in c.crops:
                self.by_crop.setdefault(crop, []).append(i)
        self.categories = np.array([c.category for c in self.cards] or [""])
        self.curated = np.array([c.origin == "curated" for c in self.cards] or [False], dtype=bool)
        self.pest_of: dict[str, list[int]] = {}
        for i, c in enumerate(self.cards):
            for form in (c.topic, *c.aliases):
                self.pest_of.setdefault(form, []).append(i)

    def _strip_crop(self, text: str, crop: str | None) -> str:
        if not crop:
            return text
        # The crop's own name says nothing about which of its cards fits.
        aliases = self.names.crops.get(crop, ()) if self.names else ()
        for form in sorted((crop, *aliases), key=len, reverse=True):
            text = text.replace(form, " ")
        return text

    def search(
        self,
        *,
        text: str,
        crop: str | None,
        pest: str | None,
        category: str | None,
        k: int = 3,
    ) -> Result:
        """The `k` best cards for the question, with the confidence in the first."""
        n = len(self.cards)
        if n == 0:
            return Result((), 0.0)
        allowed: np.ndarray | None = None
        exact = np.zeros(n, dtype=bool)
        if crop:
            shelves = [crop, *(self.names.groups_of(crop) if self.names else []), GENERAL]
            idx = [i for s in shelves for i in self.by_crop.get(s, [])]
            if not idx:
                return Result((), 0.0)
            allowed = np.zeros(n, dtype=bool)
            allowed[idx] = True
            exact[self.by_crop.get(crop, [])] = True
        terms = [
            self.vocab[t] for t in query_terms(self._strip_crop(text, crop)) if t in self.vocab
        ]
        name = np.zeros(n, dtype=np.float32)
        body = np.zeros(n, dtype=np.float32)
        if terms:
            q_max = float(self.idf[terms].sum() * (K1 + 1)) or 1.0
            body = np.asarray(self.body[:, terms].sum(axis=1)).ravel() / q_max
            cover = np.asarray(self.forms[:, terms].sum(axis=1)).ravel()
            np.maximum.at(name, self.form_card, cover.astype(np.float32))
        raw = W_NAME * name + W_BODY * np.sqrt(body)
        if pest:
            hits = self.pest_of.get(pest, [])
            raw[hits] += W_PEST
        if category:
            raw[self.categories == category] += W_CATEGORY
        raw[exact] += W_CROP
        raw[self.curated] += W_CURATED
        if allowed is not None:
            raw[~allowed] = -1.0
        top = [int(i) for i in np.argsort(-raw)[: max(k, 2)] if raw[i] > 0]
        cands = tuple(
            Candidate(self.cards[i], float(raw[i]), float(name[i]), float(body[i])) for i in top
        )
        if not cands:
            return Result((), 0.0)
        margin = cands[0].raw - (cands[1].raw if len(cands) > 1 else 0.0)
        return Result(cands[:k], calibrate(cands[0].raw, margin))
