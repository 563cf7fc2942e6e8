"""Finding the card for a question: filters, Chinese text similarity, a calibrated confidence.

Terms are jieba words (from the user dictionary of crop and pest names) and character bigrams and
skip-bigrams, so 「褐色斑点」 meets 「褐斑病」 without a word cut. Cards are scored with BM25 on
their text and with how much of a card's problem name the question contains, in sparse
matrices, so a question costs a few milliseconds with tens of thousands of cards.
"""

from __future__ import annotations

import itertools
import logging
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
# The first stage keeps the POOL best cards by raw score; a logistic reranker then scores each
# on FEATURES (intercept first in RERANK), and CALIBRATION turns the top probability, its
# margin over the runner-up and a few of the top card's features (CAL_FEATURES) into P(top card
# is right). Both are fitted by `bench/kb_calibrate.py` on the three dev sets (dev_questions,
# dev_check and the old questions.yml), with cross-validated figures; never on holdout.yml.
POOL = 10
FEATURES = (
    "raw", "name", "sqrt_body", "pest_hit", "category", "crop_exact", "no_crop", "other_shelf",
    "gap_to_best", "gap_to_next", "query_cover", "query_oov", "curated", "only_of_category",
)  # fmt: skip
RERANK: tuple[float, ...] = (
    -6.95,
    2.54,
    -0.21,
    4.67,
    0.98,
    2.41,
    1.44,
    -1.11,
    -0.33,
    -5.63,
    1.25,
    1.59,
    -0.71,
    0.00,
    1.83,
)
CAL_FEATURES = (
    "p_top", "margin", "category", "named", "query_cover", "query_oov", "no_crop", "pest_hit",
    "sqrt_body",
)  # fmt: skip
# CALIBRATION: intercept first, then one weight per CAL_FEATURES entry.
CALIBRATION: tuple[float, ...] = (-4.33, 4.60, 1.22, 4.13, -0.65, -1.48, -2.89, -0.37, 1.84, 2.67)


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


# Plant and fruit parts every crop has: in a card's *name* (「果子小」「叶子发黄」) they say
# nothing about which problem it is, so they never count as the question naming the card (a
# kiwifruit question about birds pecking 果子 is no evidence for 疏果 「果子小」). They still
# count in the body text.
GENERIC_TERMS = frozenset(
    t
    for w in (
        "果子 叶子 叶片 果实 树叶 枝条 树干 树枝 苗子 秧子 植株 茎秆 秆子 根系 树上 叶上 果上 "
        "叶面 果面 枝上 长了 有了 好多 很多 一些"
    ).split()
    for t in (w, "w:" + w)
)


def name_terms(form: str) -> list[str]:
    """The terms of a card's name or alias that identify it (generic part words left out)."""
    return [t for t in grams(form) + words(form) if t not in GENERIC_TERMS]


def _without(form: str, crop_forms: list[str]) -> str:
    """`form` without the crop names in it, unless nothing else is left."""
    out = form
    for crop in crop_forms:
        if crop in out:
            out = out.replace(crop, " ")
    return out if out.strip() else form


def query_terms(text: str) -> list[str]:
    """The terms of a question (each once)."""
    text = clean(text)
    return list(dict.fromkeys(grams(text) + words(text)))


@dataclass(frozen=True)
class Candidate:
    """A card found for a question, its raw score, what the score was made of, and the
    reranker's probability that it is the card that answers the question."""

    card: Card
    raw: float
    name: float
    body: float
    p: float = 0.0


@dataclass(frozen=True)
class Result:
    """The ranked candidates and the calibrated confidence that the first one is right."""

    candidates: tuple[Candidate, ...]
    confidence: float

    @property
    def best(self) -> Candidate | None:
        """The top candidate, if any."""
        return self.candidates[0] if self.candidates else None


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def calibrate(
    features: np.ndarray | list[float], calibration: tuple[float, ...] | None = None
) -> float:
    """P(the top card is right) from its CAL_FEATURES (see `cal_features`)."""
    b = np.asarray(CALIBRATION if calibration is None else calibration, dtype=np.float64)
    return float(_sigmoid(b[0] + np.asarray(features, dtype=np.float64) @ b[1:]))


def cal_features(x_top: np.ndarray, p_top: float, p_second: float) -> np.ndarray:
    """CAL_FEATURES of a pool's top card: its reranker probability, the margin over the
    runner-up, and some of its FEATURES row (category match, named at all, how much of the
    question it holds, how much of the question no card knows, no crop, pest named, body)."""
    f = {name: float(x_top[i]) for i, name in enumerate(FEATURES)}
    return np.array(
        [
            p_top,
            p_top - p_second,
            f["category"],
            float(f["name"] > 0),
            f["query_cover"],
            f["query_oov"],
            f["no_crop"],
            f["pest_hit"],
            f["sqrt_body"],
        ]
    )


def _columns(
    matrix: sparse.csc_matrix, cols: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored entries of some columns of a CSC matrix: rows, values and the position of
    each entry's column in `cols` (plain numpy: scipy's fancy indexing costs more than the
    arithmetic at this size)."""
    ptr = matrix.indptr
    spans = [np.arange(ptr[j], ptr[j + 1]) for j in cols]
    idx = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
    which = np.repeat(np.arange(len(cols)), [len(x) for x in spans])
    return matrix.indices[idx], matrix.data[idx], which


@dataclass(frozen=True)
class Pool:
    """The first-stage candidates of a question (by raw score) and their reranker features."""

    idx: np.ndarray
    raw: np.ndarray
    name: np.ndarray
    body: np.ndarray
    x: np.ndarray  # one row of FEATURES per candidate


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
        # Crop names come out of name forms as they come out of questions (`_strip_crop`):
        # 「萝卜空心」 is the form 「空心」 on the 萝卜 shelf, fully named by 「萝卜切开空心了」.
        crop_forms = sorted(
            {f for c, a in (names.crops.items() if names else ()) for f in (c, *a) if f},
            key=len,
            reverse=True,
        )
        for i, card in enumerate(self.cards):
            forms = [f for f in dict.fromkeys((card.topic, *card.aliases)) if f]
            body = grams(card.searchable_text()) + [t for f in forms for t in grams(f) + words(f)]
            counts: dict[int, int] = {}
            for t in body:
                j = vocab.setdefault(t, len(vocab))
                counts[j] = counts.get(j, 0) + 1
            rows.extend([i] * len(counts))
            cols.extend(counts)
            vals.extend(counts.values())
            lengths.append(len(body))
            for form in forms:
                for t in set(name_terms(_without(form, crop_forms))):
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
        # Forms are listed card by card, every card has one (its topic): the best form of each
        # card is a max over a contiguous run (reduceat, far faster than np.maximum.at).
        self.form_start = np.searchsorted(self.form_card, np.arange(n))
        self.form_runs = bool(n_forms) and len(np.unique(self.form_card)) == len(self.cards)
        self.by_crop: dict[str, list[int]] = {}
        for i, c in enumerate(self.cards):
            for crop in c.crops:
                self.by_crop.setdefault(crop, []).append(i)
        self.categories = np.array([c.category for c in self.cards] or [""])
        # How many cards each (crop, category) has: a question about a crop's only storage card
        # needs less textual evidence than one among its twenty disease cards.
        self.per_shelf_category: dict[tuple[str, str], int] = {}
        for c in self.cards:
            for crop in c.crops:
                key = (crop, c.category)
                self.per_shelf_category[key] = self.per_shelf_category.get(key, 0) + 1
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

    def pool(
        self,
        *,
        text: str,
        crop: str | None,
        pest: str | None,
        category: str | None,
        size: int = POOL,
    ) -> Pool | None:
        """The first stage: the `size` best cards by raw score, with their reranker features."""
        n = len(self.cards)
        if n == 0:
            return None
        allowed: np.ndarray | None = None
        exact = np.zeros(n, dtype=bool)
        if crop:
            shelves = [crop, *(self.names.groups_of(crop) if self.names else []), GENERAL]
            idx = [i for s in shelves for i in self.by_crop.get(s, [])]
            if not idx:
                return None
            allowed = np.zeros(n, dtype=bool)
            allowed[idx] = True
            exact[self.by_crop.get(crop, [])] = True
        all_terms = query_terms(self._strip_crop(text, crop))
        terms = [self.vocab[t] for t in all_terms if t in self.vocab]
        name = np.zeros(n, dtype=np.float32)
        body = np.zeros(n, dtype=np.float32)
        hits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if terms:
            q_max = float(self.idf[terms].sum() * (K1 + 1)) or 1.0
            hits = _columns(self.body, terms)
            body = np.bincount(hits[0], weights=hits[1], minlength=n).astype(np.float32) / q_max
            f_rows, f_vals, _ = _columns(self.forms, terms)
            cover = np.bincount(f_rows, weights=f_vals, minlength=self.forms.shape[0])
            if self.form_runs:
                name = np.maximum.reduceat(cover.astype(np.float32), self.form_start)
            else:
                np.maximum.at(name, self.form_card, cover.astype(np.float32))
        raw = W_NAME * name + W_BODY * np.sqrt(body)
        pest_hit = np.zeros(n, dtype=bool)
        if pest:
            pest_hit[self.pest_of.get(pest, [])] = True
            raw[pest_hit] += W_PEST
        cat = self.categories == category if category else np.zeros(n, dtype=bool)
        raw[cat] += W_CATEGORY
        raw[exact] += W_CROP
        raw[self.curated] += W_CURATED
        if allowed is not None:
            raw[~allowed] = -1.0
        k = min(size, n)
        part = np.argpartition(-raw, k - 1)[:k] if k < n else np.arange(n)
        top = part[np.argsort(-raw[part], kind="stable")]
        top = top[raw[top] > 0]
        if not len(top):
            return None
        # How much of the question (idf-weighted) each candidate's text holds, and how much of
        # the question no card knows at all (a crop or topic we have nothing on).
        if hits is not None:
            position = np.full(n, -1, dtype=np.int64)
            position[top] = np.arange(len(top))
            at = position[hits[0]]
            keep = at >= 0
            present = np.zeros((len(top), len(terms)), dtype=bool)
            present[at[keep], hits[2][keep]] = True
            w = self.idf[terms]
            qcover = present @ w / float(w.sum())
        else:
            qcover = np.zeros(len(top))
        oov = 1.0 - len(terms) / len(all_terms) if all_terms else 1.0
        r = raw[top]
        nxt = np.append(r[1:], 0.0)
        only = np.zeros(len(top))
        if crop and category:
            shelves = [crop, *(self.names.groups_of(crop) if self.names else [])]
            n_cat = sum(self.per_shelf_category.get((s, category), 0) for s in shelves)
            if n_cat == 1:
                on_shelf = np.zeros(n, dtype=bool)
                on_shelf[[i for s in shelves for i in self.by_crop.get(s, [])]] = True
                only = (cat & on_shelf)[top].astype(float)
        x = np.column_stack(
            [
                r,
                name[top],
                np.sqrt(body[top]),
                pest_hit[top],
                cat[top],
                exact[top],
                np.full(len(top), crop is None, dtype=float),
                (~exact[top]) & (crop is not None),
                r[0] - r,
                r - nxt,
                qcover,
                np.full(len(top), oov),
                self.curated[top],
                only,
            ]
        ).astype(np.float64)
        return Pool(top, r, name[top], body[top], x)

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
        pool = self.pool(text=text, crop=crop, pest=pest, category=category)
        return self.rank(pool, k=k)

    def rank(
        self,
        pool: Pool | None,
        *,
        k: int = 3,
        rerank: tuple[float, ...] | None = None,
        calibration: tuple[float, ...] | None = None,
    ) -> Result:
        """The second stage: the pool reranked, its top `k` and the calibrated confidence
        (with the fitted constants, or those given, as bench/kb_calibrate.py does in CV)."""
        if pool is None:
            return Result((), 0.0)
        rr = RERANK if rerank is None else rerank
        w = np.asarray(rr[1:], dtype=np.float64)
        p = np.asarray(_sigmoid(rr[0] + pool.x @ w))
        order = np.argsort(-p, kind="stable")[: max(k, 2)]
        second = float(p[order[1]]) if len(order) > 1 else 0.0
        conf = calibrate(cal_features(pool.x[order[0]], float(p[order[0]]), second), calibration)
        cands = tuple(
            Candidate(
                self.cards[int(pool.idx[j])],
                float(pool.raw[j]),
                float(pool.name[j]),
                float(pool.body[j]),
                float(p[j]),
            )
            for j in order
        )
        return Result(cands[:k], conf)
